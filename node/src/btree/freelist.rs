//! Persistent free list: a chain of pages listing free page ids, written at each commit.
//!
//! Page layout: header (type `T_FREELIST`, nkeys = ids in this page), next page id `u64`
//! at offset 16 (0 = end), then the ids as `u64`s. The header's reserved byte is `HELD` on
//! pages listing ids freed by the commit that wrote the list: those pages still belong to the
//! tree of the other meta page, so a reopened writer must not reuse them before its own next
//! commit is durable (see `mod.rs`). Files written before this flag have 0 there: all free.

use super::page::{self, corrupt, rd_u64, wr_u64, HDR, T_FREELIST};
use super::BTreeError;

const NEXT: usize = HDR;
const IDS: usize = HDR + 8;
/// Offset of the flag byte (the common header's reserved byte).
const FLAGS: usize = 5;
/// Flag: this page lists ids freed by the commit that wrote it.
const HELD: u8 = 1;

/// A persisted free list as read back.
#[derive(Debug, Default)]
pub(crate) struct FreeList {
    /// Ids reusable by the next commit.
    pub free: Vec<u64>,
    /// Ids freed by the commit that wrote the list: reusable one commit later.
    pub held: Vec<u64>,
    /// The chain's own pages.
    pub pages: Vec<u64>,
}

/// How many page ids fit in one freelist page.
pub(crate) fn per_page(ps: usize) -> usize {
    (ps - IDS) / 8
}

/// Pages needed to store `n` ids.
pub(crate) fn pages_needed(n: usize, ps: usize) -> usize {
    n.div_ceil(per_page(ps))
}

/// Pages needed to store `free` plain and `held` held ids (each page holds one kind).
pub(crate) fn pages_for(free: usize, held: usize, ps: usize) -> usize {
    pages_needed(free, ps) + pages_needed(held, ps)
}

/// Reads the chain starting at `head`.
pub(crate) fn read(
    map: &[u8],
    head: u64,
    ps: usize,
    page_count: u64,
    verify_crc: bool,
) -> Result<FreeList, BTreeError> {
    let mut out = FreeList::default();
    let pages = &mut out.pages;
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
        let ids = if p[FLAGS] == HELD {
            &mut out.held
        } else {
            &mut out.free
        };
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
    Ok(out)
}

/// Encodes `free` then `held` ids into sealed pages stored at `pages` (chained in that order);
/// `pages` must hold at least `pages_for(free.len(), held.len(), ps)` ids.
pub(crate) fn encode(free: &[u64], held: &[u64], pages: &[u64], ps: usize) -> Vec<(u64, Vec<u8>)> {
    let per = per_page(ps);
    let mut out = Vec::with_capacity(pages.len());
    let chunks = free
        .chunks(per)
        .map(|c| (c, 0u8))
        .chain(held.chunks(per).map(|c| (c, HELD)));
    let mut chunks = chunks.fuse();
    for (i, &pg) in pages.iter().enumerate() {
        let (chunk, flag) = chunks.next().unwrap_or((&[], 0));
        let mut buf = vec![0u8; ps];
        page::write_header(&mut buf, T_FREELIST, chunk.len() as u16, pg);
        buf[FLAGS] = flag;
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
        let held: Vec<u64> = (200..230).collect();
        let n = pages_for(ids.len(), held.len(), ps);
        assert_eq!(n, 190usize.div_ceil(per_page(ps)) + 1);
        let pages: Vec<u64> = (2..2 + n as u64).collect();
        let enc = encode(&ids, &held, &pages, ps);
        let mut map = vec![0u8; 240 * ps];
        for (pg, buf) in &enc {
            let o = *pg as usize * ps;
            map[o..o + ps].copy_from_slice(buf);
        }
        let got = read(&map, 2, ps, 240, true).unwrap();
        assert_eq!(got.free, ids);
        assert_eq!(got.held, held);
        assert_eq!(got.pages, pages);
        // an out-of-range id is corruption
        assert!(read(&map, 2, ps, 150, true).is_err());
        // a cycle is corruption, not a hang
        let last = *pages.last().unwrap() as usize * ps;
        map[last + NEXT..last + NEXT + 8].copy_from_slice(&2u64.to_le_bytes());
        assert!(read(&map, 2, ps, 240, false).is_err());
    }
}
