//! Read-side iteration: a k-way merge of version streams and the MVCC visibility filter that turns versions
//! into user rows (newest version at or below the snapshot wins; point tombstones, covering range tombstones and
//! expired values hide it), forward or reverse.
//!
//! Sources are any `Iterator<Item = MidgeResult<Entry>>` in internal order (or exactly reversed): memtable
//! cursors and SST cursors. This module does no I/O of its own and knows nothing about files.

use crate::error::MidgeResult;
use crate::types::{Entry, RangeTombstone, Seq, cmp_internal};
use bytes::Bytes;
use std::cmp::Ordering;

/// A stream of versions.
pub(crate) type Source = Box<dyn Iterator<Item = MidgeResult<Entry>> + Send>;

/// Merges sources by internal order (ascending, or descending when `reverse`).
pub(crate) struct MergeIter {
    sources: Vec<Source>,
    heads: Vec<Option<Entry>>,
    reverse: bool,
    primed: bool,
}

impl MergeIter {
    pub fn new(sources: Vec<Source>, reverse: bool) -> MergeIter {
        let n = sources.len();
        MergeIter {
            sources,
            heads: vec![None; n],
            reverse,
            primed: false,
        }
    }

    fn prime(&mut self) -> MidgeResult<()> {
        for i in 0..self.sources.len() {
            self.heads[i] = self.sources[i].next().transpose()?;
        }
        self.primed = true;
        Ok(())
    }
}

impl Iterator for MergeIter {
    type Item = MidgeResult<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        if !self.primed
            && let Err(e) = self.prime()
        {
            return Some(Err(e));
        }
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            let Some(e) = h else { continue };
            best = match best {
                None => Some(i),
                Some(b) => {
                    let be = self.heads[b].as_ref()?;
                    let ord = cmp_internal(&e.key, e.seq, &be.key, be.seq);
                    let better = if self.reverse {
                        ord == Ordering::Greater
                    } else {
                        ord == Ordering::Less
                    };
                    if better { Some(i) } else { Some(b) }
                }
            };
        }
        let i = best?;
        let out = self.heads[i].take();
        match self.sources[i].next().transpose() {
            Ok(n) => self.heads[i] = n,
            Err(e) => return Some(Err(e)),
        }
        out.map(Ok)
    }
}

/// Turns merged versions into visible `(key, value)` rows at a snapshot.
pub(crate) struct VisibleIter {
    merge: MergeIter,
    snapshot: Seq,
    read_time: u64,
    tombstones: Vec<RangeTombstone>,
    lookahead: Option<Entry>,
}

impl VisibleIter {
    pub fn new(
        sources: Vec<Source>,
        reverse: bool,
        snapshot: Seq,
        read_time: u64,
        tombstones: Vec<RangeTombstone>,
    ) -> VisibleIter {
        let tombstones = tombstones.into_iter().filter(|t| t.seq <= snapshot).collect();
        VisibleIter {
            merge: MergeIter::new(sources, reverse),
            snapshot,
            read_time,
            tombstones,
            lookahead: None,
        }
    }

    fn pull(&mut self) -> MidgeResult<Option<Entry>> {
        if let Some(e) = self.lookahead.take() {
            return Ok(Some(e));
        }
        self.merge.next().transpose()
    }
}

impl Iterator for VisibleIter {
    type Item = MidgeResult<(Bytes, Bytes)>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let first = match self.pull() {
                Ok(Some(e)) => e,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            let mut best = (first.seq <= self.snapshot).then_some(first.clone());
            loop {
                match self.pull() {
                    Ok(Some(e)) if e.key == first.key => {
                        if e.seq <= self.snapshot && best.as_ref().is_none_or(|b| e.seq > b.seq) {
                            best = Some(e);
                        }
                    }
                    Ok(Some(e)) => {
                        self.lookahead = Some(e);
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => return Some(Err(e)),
                }
            }
            let Some(b) = best else { continue };
            if b.is_absent_at(self.read_time) {
                continue;
            }
            if self
                .tombstones
                .iter()
                .any(|t| t.hides(&b.key, b.seq, self.snapshot))
            {
                continue;
            }
            return Some(Ok((b.key, b.value)));
        }
    }
}

/// The smallest key greater than every key with `prefix` (None when unbounded, e.g. all-0xFF prefixes).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Bytes> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return Some(Bytes::from(p));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::MidgeError;
    use crate::types::EntryKind;

    fn e(k: &str, seq: Seq, kind: EntryKind) -> Entry {
        Entry {
            key: Bytes::from(k.to_string()),
            seq,
            kind,
            value: Bytes::from(format!("{k}{seq}")),
            expiry: None,
        }
    }

    fn src(mut v: Vec<Entry>, reverse: bool) -> Source {
        v.sort_by(|a, b| cmp_internal(&a.key, a.seq, &b.key, b.seq));
        if reverse {
            v.reverse();
        }
        Box::new(v.into_iter().map(Ok))
    }

    #[test]
    fn visibility_respects_snapshot_tombstones_ranges_and_direction() {
        use EntryKind::*;
        let a = vec![e("a", 1, Put), e("b", 2, Put), e("c", 3, Put), e("d", 9, Put)];
        let b = vec![e("a", 5, Delete), e("b", 6, Put), e("e", 4, Put)];
        let rts = vec![RangeTombstone {
            start: Bytes::from("c"),
            end: Bytes::from("e"),
            seq: 7,
        }];
        for reverse in [false, true] {
            let rows: Vec<_> = VisibleIter::new(
                vec![src(a.clone(), reverse), src(b.clone(), reverse)],
                reverse,
                8,
                0,
                rts.clone(),
            )
            .map(|r| r.unwrap())
            .collect();
            let mut want = vec![
                (Bytes::from("b"), Bytes::from("b6")),
                (Bytes::from("e"), Bytes::from("e4")),
            ];
            if reverse {
                want.reverse();
            }
            assert_eq!(rows, want, "reverse={reverse}");
        }
        let old: Vec<_> = VisibleIter::new(
            vec![src(a.clone(), false), src(b.clone(), false)],
            false,
            4,
            0,
            rts,
        )
        .map(|r| r.unwrap().0)
        .collect();
        assert_eq!(
            old,
            vec![
                Bytes::from("a"),
                Bytes::from("b"),
                Bytes::from("c"),
                Bytes::from("e")
            ]
        );
    }

    #[test]
    fn expired_values_are_hidden() {
        let mut x = e("a", 1, EntryKind::Put);
        x.expiry = Some(100);
        let rows: Vec<_> =
            VisibleIter::new(vec![src(vec![x.clone()], false)], false, 10, 100, vec![]).collect();
        assert!(rows.is_empty());
        let rows: Vec<_> = VisibleIter::new(vec![src(vec![x], false)], false, 10, 99, vec![]).collect();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn errors_surface_in_order() {
        let s: Source = Box::new(
            vec![
                Ok(e("a", 1, EntryKind::Put)),
                Err(MidgeError::Corruption("x".into())),
            ]
            .into_iter(),
        );
        let mut it = VisibleIter::new(vec![s], false, 10, 0, vec![]);
        assert!(it.next().unwrap().is_err());
    }

    #[test]
    fn prefix_successor_handles_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(Bytes::from("ac")));
        assert_eq!(prefix_successor(&[b'a', 0xFF]), Some(Bytes::from("b")));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
