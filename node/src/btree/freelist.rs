//! Persistent free list: a chain of pages listing free page ids, written at each commit.
//!
//! Page layout: header (type `T_FREELIST`, nkeys = ids in this page), next page id `u64`
//! at offset 16 (0 = end), then the ids as `u64`s.

use super::page::{self, corrupt, rd_u64, wr_u64, HDR, T_FREELIST};
use super::BTreeError;

const NEXT: usize = HDR;
const IDS: usize = HDR + 8;

/// How many page ids fit in one freelist page.
pub(crate) fn per_page(ps: usize) -> usize {
    (ps - IDS) / 8
}

/// Pages needed to store `n` ids.
pub(crate) fn pages_needed(n: usize, ps: usize) -> usize {
    n.div_ceil(per_page(ps))
}

/// Reads the chain starting at `head`: (free ids, the chain's own pages).
pub(crate) fn read(
    map: &[u8],
    head: u64,
    ps: usize,
    page_count: u64,
    verify_crc: bool,
) -> Result<(Vec<u64>, Vec<u64>), BTreeError> {
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    let mut pg = head;
    while pg != 0 {
        if pg < 2 || pg >= page_count || pages.len() as u64 > page_count {
            return Err(corrupt(format!("freelist chain reaches bad page {pg}")));
        }
        let p = page::page_slice(map, pg, ps)?;
        if p[4] != T_FREELIST || rd_u64(p, 8) != Some(pg) {
            return Err(corrupt(format!("page {pg} is not a freelist page")));
        }
        if verify_crc && !page::crc_ok(p) {
            return Err(corrupt(format!("freelist page {pg}: checksum mismatch")));
        }
        let n = page::rd_u16(p, 6).unwrap_or(0) as usize;
        if n > per_page(ps) {
            return Err(corrupt(format!("freelist page {pg}: too many ids")));
        }
        for i in 0..n {
            let id = rd_u64(p, IDS + 8 * i).ok_or_else(|| corrupt("truncated freelist page"))?;
            if id < 2 || id >= page_count {
                return Err(corrupt(format!("freelist lists out-of-range page {id}")));
            }
            ids.push(id);
        }
        pages.push(pg);
        pg = rd_u64(p, NEXT).unwrap_or(0);
    }
    Ok((ids, pages))
}

/// Encodes `ids` into sealed pages stored at `pages` (chained in that order).
pub(crate) fn encode(ids: &[u64], pages: &[u64], ps: usize) -> Vec<(u64, Vec<u8>)> {
    let per = per_page(ps);
    let mut out = Vec::with_capacity(pages.len());
    let mut chunks = ids.chunks(per);
    for (i, &pg) in pages.iter().enumerate() {
        let chunk = chunks.next().unwrap_or(&[]);
        let mut buf = vec![0u8; ps];
        page::write_header(&mut buf, T_FREELIST, chunk.len() as u16, pg);
        wr_u64(&mut buf, NEXT, pages.get(i + 1).copied().unwrap_or(0));
        for (j, id) in chunk.iter().enumerate() {
            wr_u64(&mut buf, IDS + 8 * j, *id);
        }
        page::seal(&mut buf);
        out.push((pg, buf));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_chain() {
        let ps = 512;
        let ids: Vec<u64> = (10..200).collect();
        let n = pages_needed(ids.len(), ps);
        assert_eq!(n, 190usize.div_ceil(per_page(ps)));
        let pages: Vec<u64> = (2..2 + n as u64).collect();
        let enc = encode(&ids, &pages, ps);
        let mut map = vec![0u8; 200 * ps];
        for (pg, buf) in &enc {
            let o = *pg as usize * ps;
            map[o..o + ps].copy_from_slice(buf);
        }
        let (got, chain) = read(&map, 2, ps, 200, true).unwrap();
        assert_eq!(got, ids);
        assert_eq!(chain, pages);
        // an out-of-range id is corruption
        assert!(read(&map, 2, ps, 150, true).is_err());
        // a cycle is corruption, not a hang
        let last = *pages.last().unwrap() as usize * ps;
        map[last + NEXT..last + NEXT + 8].copy_from_slice(&2u64.to_le_bytes());
        assert!(read(&map, 2, ps, 200, false).is_err());
    }
}
