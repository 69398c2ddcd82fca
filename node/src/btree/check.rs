//! Full verification of a committed tree: checksums, ordering, separators, depth, overflow
//! runs, and page accounting (reachable ∪ free == every page below the high-water mark).

use super::page::{self, PageView, ValRef, OVERFLOW_HDR, T_OVERFLOW};
use super::{freelist, max_key_size, CheckReport, Snapshot};

struct Checker<'a> {
    snap: &'a Snapshot,
    ps: usize,
    /// Who owns each page: 0 = nobody yet.
    owner: Vec<u8>,
    report: CheckReport,
}

const USED: u8 = 1;
const FREE: u8 = 2;

/// Walks the whole snapshot; every inconsistency becomes a line in `problems`.
pub(crate) fn check(snap: &Snapshot) -> CheckReport {
    let m = snap.meta;
    let mut c = Checker {
        snap,
        ps: snap.ps(),
        owner: vec![0; m.page_count as usize],
        report: CheckReport::default(),
    };
    c.owner[0] = USED;
    c.owner[1] = USED;
    if m.root != 0 {
        c.walk(m.root, 1, None, None);
    }
    if c.report.entries != m.entries {
        c.problem(format!(
            "meta counts {} entries, tree holds {}",
            m.entries, c.report.entries
        ));
    }
    match freelist::read(&snap.map, m.freelist, c.ps, m.page_count, true) {
        Ok(fl) => {
            let ids: Vec<u64> = fl.free.into_iter().chain(fl.held).collect();
            for pg in fl.pages {
                c.claim(pg, USED, "freelist page");
            }
            if ids.len() as u64 != m.free_count {
                c.problem(format!(
                    "meta counts {} free pages, freelist holds {}",
                    m.free_count,
                    ids.len()
                ));
            }
            for id in ids {
                c.claim(id, FREE, "free page");
            }
        }
        Err(e) => c.problem(format!("freelist unreadable: {e}")),
    }
    let leaked: Vec<u64> = (2..m.page_count)
        .filter(|&p| c.owner[p as usize] == 0)
        .collect();
    if !leaked.is_empty() {
        let shown: Vec<String> = leaked.iter().take(20).map(|p| p.to_string()).collect();
        c.problem(format!(
            "{} pages neither reachable nor free (leaked): {}",
            leaked.len(),
            shown.join(", ")
        ));
    }
    c.report
}

impl Checker<'_> {
    fn problem(&mut self, p: String) {
        if self.report.problems.len() < 1000 {
            self.report.problems.push(p);
        }
    }

    /// Marks `pg`; false (and a problem) if it is out of range or already claimed.
    fn claim(&mut self, pg: u64, how: u8, what: &str) -> bool {
        if pg < 2 || pg >= self.owner.len() as u64 {
            self.problem(format!("{what} {pg} is out of range"));
            return false;
        }
        let o = &mut self.owner[pg as usize];
        if *o != 0 {
            let prev = if *o == FREE { "free" } else { "in use" };
            self.problem(format!("{what} {pg} is already {prev} (double use)"));
            return false;
        }
        *o = how;
        self.report.pages_checked += 1;
        true
    }

    fn walk(&mut self, pg: u64, depth: u32, lo: Option<&[u8]>, hi: Option<&[u8]>) {
        if !self.claim(pg, USED, "tree page") {
            return;
        }
        let map = &self.snap.map;
        let buf = match page::page_slice(map, pg, self.ps) {
            Ok(b) => b,
            Err(e) => return self.problem(format!("page {pg}: {e}")),
        };
        if !page::crc_ok(buf) {
            self.problem(format!("page {pg}: checksum mismatch"));
        }
        let v = match PageView::new(buf, pg) {
            Ok(v) => v,
            Err(e) => return self.problem(format!("page {pg}: {e}")),
        };
        let n = v.nkeys();
        let max_depth = self.snap.meta.depth;
        let mut prev: Option<&[u8]> = lo;
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let k = match v.key(i) {
                Ok(k) => k,
                Err(e) => return self.problem(format!("page {pg} key {i}: {e}")),
            };
            if k.len() > max_key_size(self.ps) {
                self.problem(format!("page {pg} key {i}: {} bytes is too long", k.len()));
            }
            let ordered = match prev {
                None => true,
                Some(p) if i == 0 => p <= k,
                Some(p) => p < k,
            };
            if !ordered {
                self.problem(format!("page {pg} key {i}: out of order"));
            }
            if hi.is_some_and(|h| k >= h) {
                self.problem(format!("page {pg} key {i}: not below the parent separator"));
            }
            if v.head(i) != Some(page::head_of(k)) {
                self.problem(format!(
                    "page {pg} key {i}: slot key head does not match the key"
                ));
            }
            prev = Some(k);
            keys.push(k);
        }
        if v.is_leaf() {
            if depth != max_depth {
                self.problem(format!(
                    "leaf {pg} at depth {depth}, tree depth is {max_depth}"
                ));
            }
            if n == 0 {
                self.problem(format!("leaf {pg} is empty"));
            }
            self.report.entries += n as u64;
            for i in 0..n {
                match v.leaf_entry(i) {
                    Ok((_, ValRef::Overflow { pgno, len })) => self.overflow(pg, pgno, len),
                    Ok(_) => {}
                    Err(e) => self.problem(format!("page {pg} entry {i}: {e}")),
                }
            }
        } else {
            if depth >= max_depth {
                self.problem(format!(
                    "branch {pg} at depth {depth}, tree depth is {max_depth}"
                ));
                return;
            }
            for ci in 0..=n {
                let child = match v.child(ci) {
                    Ok(c) => c,
                    Err(e) => return self.problem(format!("page {pg} child {ci}: {e}")),
                };
                let clo = if ci == 0 { lo } else { Some(keys[ci - 1]) };
                let chi = if ci == n { hi } else { Some(keys[ci]) };
                self.walk(child, depth + 1, clo, chi);
            }
        }
    }

    fn overflow(&mut self, leaf: u64, pgno: u64, len: u64) {
        let n = page::overflow_pages(len as usize, self.ps);
        for p in pgno..pgno.saturating_add(n) {
            if !self.claim(p, USED, "overflow page") {
                return;
            }
        }
        let start = pgno as usize * self.ps;
        let Some(run) = self
            .snap
            .map
            .get(start..start + OVERFLOW_HDR + len as usize)
        else {
            return self.problem(format!("leaf {leaf}: overflow run {pgno} past end of file"));
        };
        if run[4] != T_OVERFLOW
            || page::rd_u64(run, 8) != Some(pgno)
            || page::rd_u64(run, page::HDR) != Some(len)
        {
            self.problem(format!("overflow run {pgno}: bad header"));
        } else if !page::crc_ok(run) {
            self.problem(format!("overflow run {pgno}: checksum mismatch"));
        }
    }
}
