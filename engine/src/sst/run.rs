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

/// Splits `tables` (each with its smallest and largest key) into runs a [`RunIter`] may walk: every run is in
/// ascending key order, and each table's smallest key is strictly greater than the previous table's largest
/// key. Tables that share or overlap a key with their neighbour start a new run, so the runs stay correct
/// whatever the layout (a merge over several runs still orders their versions).
pub(crate) fn disjoint_runs<T>(mut tables: Vec<T>, range: impl Fn(&T) -> (&[u8], &[u8])) -> Vec<Vec<T>> {
    tables.sort_by(|a, b| {
        let ((alo, ahi), (blo, bhi)) = (range(a), range(b));
        cmp_keys(alo, blo).then_with(|| cmp_keys(ahi, bhi))
    });
    let mut runs: Vec<Vec<T>> = Vec::new();
    for t in tables {
        let joins = runs
            .last()
            .and_then(|r| r.last())
            .is_some_and(|prev| cmp_keys(range(prev).1, range(&t).0).is_lt());
        match runs.last_mut() {
            Some(run) if joins => run.push(t),
            _ => runs.push(vec![t]),
        }
    }
    runs
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

    fn range<'a>(t: &'a (&[u8], &[u8])) -> (&'a [u8], &'a [u8]) {
        (t.0, t.1)
    }

    #[test]
    fn runs_split_where_tables_touch_or_overlap() {
        let tables: Vec<(&[u8], &[u8])> = vec![
            (b"m", b"p"),
            (b"a", b"c"),
            (b"d", b"f"),
            (b"f", b"h"),
            (b"g", b"k"),
            (b"q", b"z"),
        ];
        let runs = disjoint_runs(tables, range);
        let runs: Vec<Vec<&[u8]>> = runs.iter().map(|r| r.iter().map(|t| t.0).collect()).collect();
        // a-c, d-f; f-h touches d-f at "f": a new run; g-k overlaps f-h: another, which m-p and q-z join.
        assert_eq!(
            runs,
            vec![vec![&b"a"[..], b"d"], vec![b"f"], vec![b"g", b"m", b"q"]]
                .into_iter()
                .map(|r| r.into_iter().collect::<Vec<&[u8]>>())
                .collect::<Vec<_>>()
        );
        assert!(disjoint_runs(Vec::<(&[u8], &[u8])>::new(), range).is_empty());
    }
}
