//! A sorted run: tables of one level whose key ranges are strictly disjoint, read as one cursor that opens
//! each table's [`SstIter`] only when the walk reaches it. A scan over a level of many tables then feeds the
//! merge one input instead of one per table (a full scan after compaction becomes the merge's single-input
//! path), and a short seek opens the one table that holds its start instead of a block in every table.

use super::{SstIter, SstReader};
use crate::error::MidgeResult;
use crate::iter::Cursor;
use crate::types::{Entry, cmp_keys};
use bytes::Bytes;
use std::ops::Bound;
use std::sync::Arc;

/// Sorts `tables` (each with a group — its level — and its smallest and largest key) by group and key range,
/// and yields them as runs a [`RunIter`] may walk: within a run every table has the same group and a smallest
/// key strictly greater than the previous table's largest key. A table that shares or overlaps a key with its
/// predecessor starts a new run, so the runs stay correct whatever the layout (a merge over several runs still
/// orders their versions). Allocates nothing.
pub(crate) fn disjoint_runs<'a, T>(
    tables: &'a mut [T],
    range: impl Fn(&T) -> (u32, &[u8], &[u8]) + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    tables.sort_by(|a, b| {
        let ((ga, la, ha), (gb, lb, hb)) = (range(a), range(b));
        ga.cmp(&gb)
            .then_with(|| cmp_keys(la, lb))
            .then_with(|| cmp_keys(ha, hb))
    });
    let mut rest: &'a [T] = tables;
    std::iter::from_fn(move || {
        let mut n = usize::from(!rest.is_empty());
        while let (Some(prev), Some(next)) = (rest.get(n.wrapping_sub(1)), rest.get(n)) {
            let ((g0, _, hi), (g1, lo, _)) = (range(prev), range(next));
            if g0 != g1 || !cmp_keys(hi, lo).is_lt() {
                break;
            }
            n += 1;
        }
        let (run, tail) = rest.split_at(n);
        rest = tail;
        (!run.is_empty()).then_some(run)
    })
}

/// Walks a run of tables (ascending, strictly disjoint key ranges; see [`disjoint_runs`]) within bounds,
/// forward or reverse, as one cursor.
pub(crate) struct RunIter {
    tables: Vec<Arc<SstReader>>,
    lo: Bound<Bytes>,
    hi: Bound<Bytes>,
    reverse: bool,
    /// Tables opened so far (the next one to open is `tables[opened]` forward, `tables[len - 1 - opened]`
    /// reverse).
    opened: usize,
    cur: Option<SstIter>,
}

impl RunIter {
    pub fn new(tables: Vec<Arc<SstReader>>, lo: Bound<Bytes>, hi: Bound<Bytes>, reverse: bool) -> RunIter {
        RunIter {
            tables,
            lo,
            hi,
            reverse,
            opened: 0,
            cur: None,
        }
    }
}

impl Cursor for RunIter {
    #[inline]
    fn current(&self) -> Option<&Entry> {
        self.cur.as_ref()?.current()
    }

    /// The tables are strictly disjoint, so the next version belongs to another key whenever the open table
    /// knows it does (at a table's end the next table's keys all differ, but that is not known here).
    #[inline]
    fn next_key_differs(&self) -> bool {
        self.cur.as_ref().is_some_and(Cursor::next_key_differs)
    }

    fn advance(&mut self) -> MidgeResult<()> {
        loop {
            if let Some(c) = &mut self.cur {
                if let Err(e) = c.advance() {
                    self.cur = None;
                    self.opened = self.tables.len();
                    return Err(e);
                }
                if c.current().is_some() {
                    return Ok(());
                }
                self.cur = None;
            }
            if self.opened >= self.tables.len() {
                return Ok(());
            }
            let i = if self.reverse {
                self.tables.len() - 1 - self.opened
            } else {
                self.opened
            };
            self.opened += 1;
            self.cur = Some(SstIter::new(
                self.tables[i].clone(),
                self.lo.clone(),
                self.hi.clone(),
                self.reverse,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_where_tables_touch_or_overlap_or_change_level() {
        let mut tables: Vec<(u32, &[u8], &[u8])> = vec![
            (1, b"m", b"p"),
            (1, b"a", b"c"),
            (1, b"d", b"f"),
            (1, b"f", b"h"),
            (1, b"g", b"k"),
            (1, b"q", b"z"),
            (2, b"b", b"e"),
            (2, b"x", b"y"),
        ];
        let runs: Vec<Vec<&[u8]>> = disjoint_runs(&mut tables, |t| *t)
            .map(|r| r.iter().map(|t| t.1).collect())
            .collect();
        // a-c, d-f; f-h touches d-f at "f": a new run; g-k overlaps f-h: another, which m-p and q-z join;
        // level 2 is its own run.
        let want: Vec<Vec<&[u8]>> = vec![
            vec![b"a", b"d"],
            vec![b"f"],
            vec![b"g", b"m", b"q"],
            vec![b"b", b"x"],
        ];
        assert_eq!(runs, want);
        assert_eq!(
            disjoint_runs(&mut Vec::<(u32, &[u8], &[u8])>::new(), |t| *t).count(),
            0
        );
    }
}
