//! Leveled compaction: the pure picker ([`choose`]) that decides what to compact from the live file set, and
//! the types describing a decision.
//!
//! Decide vs act: nothing here reads files, takes locks or touches the manifest. The core executes a [`Choice`]
//! (merge inputs, write outputs, publish one manifest edit) and may call [`choose`] again.

use crate::manifest::FileMeta;
use std::collections::BTreeSet;

/// Shape of the level tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PickerConfig {
    /// L0 file count that triggers an L0 → L1 compaction.
    pub l0_trigger: usize,
    /// L0 file count at which L0 work outranks everything (writes stall near here).
    pub l0_critical: usize,
    /// Target size of L1 in bytes; each deeper level is `multiplier` times larger.
    pub base_level_bytes: u64,
    pub multiplier: u64,
    /// Number of levels (L0 ..= max_level).
    pub max_level: u32,
    /// Whether disjoint L0 files clear of L1 may move down without a rewrite. Off for an explicit full
    /// compaction, which must rewrite L0 so tombstones drop what they cover (a move keeps it all).
    pub l0_moves: bool,
}

impl PickerConfig {
    /// Target bytes for `level` (>= 1).
    pub fn target(&self, level: u32) -> u64 {
        let mut t = self.base_level_bytes.max(1);
        for _ in 1..level {
            t = t.saturating_mul(self.multiplier.max(2));
        }
        t
    }
}

/// What to do next for one column family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Nothing is over its threshold.
    Nothing,
    /// Re-level files without rewriting them (no overlap in the output level).
    Move { files: Vec<u64>, to_level: u32 },
    /// Merge `inputs` (from `level`) with the `overlapping` files of `level + 1` into new files at `level + 1`.
    Merge {
        level: u32,
        inputs: Vec<u64>,
        overlapping: Vec<u64>,
        output_level: u32,
        bottommost: bool,
    },
}

fn overlaps(a: &FileMeta, lo: &[u8], hi: &[u8]) -> bool {
    a.smallest_key.as_ref() <= hi && lo <= a.largest_key.as_ref()
}

fn key_span(files: &[&FileMeta]) -> Option<(Vec<u8>, Vec<u8>)> {
    let lo = files.iter().map(|f| f.smallest_key.as_ref()).min()?;
    let hi = files.iter().map(|f| f.largest_key.as_ref()).max()?;
    Some((lo.to_vec(), hi.to_vec()))
}

/// Chooses the next compaction for the files of one column family. `busy` holds files already being compacted:
/// a choice never includes them (nor any file overlapping a busy one in the output level).
///
/// Priority: critical L0 debt, then the deepest level over its target, then ordinary L0 debt. Every choice
/// moves data strictly deeper, so debt always decreases.
pub(crate) fn choose(files: &[FileMeta], cfg: &PickerConfig, busy: &BTreeSet<u64>) -> Choice {
    let level = |l: u32| -> Vec<&FileMeta> { files.iter().filter(|f| f.level == l).collect() };
    let deepest_used = files.iter().map(|f| f.level).max().unwrap_or(0);
    let l0 = level(0);
    if l0.len() >= cfg.l0_critical
        && let Some(c) = pick_l0(&l0, &level(1), busy, deepest_used, cfg.l0_moves)
    {
        return c;
    }
    for lvl in (1..cfg.max_level).rev() {
        let here = level(lvl);
        let bytes: u64 = here.iter().map(|f| f.size).sum();
        if bytes <= cfg.target(lvl) {
            continue;
        }
        let below = level(lvl + 1);
        // Deterministic round-robin substitute: the file with the most bytes per overlapping byte below.
        let mut best: Option<(&FileMeta, Vec<&FileMeta>, u128)> = None;
        for f in here.iter().filter(|f| !busy.contains(&f.id)) {
            let ov: Vec<&FileMeta> = below
                .iter()
                .filter(|b| overlaps(b, &f.smallest_key, &f.largest_key))
                .copied()
                .collect();
            if ov.iter().any(|b| busy.contains(&b.id)) {
                continue;
            }
            let ov_bytes: u64 = ov.iter().map(|b| b.size).sum();
            let score = (u128::from(ov_bytes) << 32) / u128::from(f.size.max(1));
            if best
                .as_ref()
                .is_none_or(|(bf, _, s)| score < *s || (score == *s && f.id < bf.id))
            {
                best = Some((f, ov, score));
            }
        }
        if let Some((f, ov, _)) = best {
            if ov.is_empty() {
                return Choice::Move {
                    files: vec![f.id],
                    to_level: lvl + 1,
                };
            }
            return Choice::Merge {
                level: lvl,
                inputs: vec![f.id],
                overlapping: ov.iter().map(|b| b.id).collect(),
                output_level: lvl + 1,
                bottommost: lvl + 1 >= deepest_used,
            };
        }
    }
    if l0.len() >= cfg.l0_trigger
        && let Some(c) = pick_l0(&l0, &level(1), busy, deepest_used, cfg.l0_moves)
    {
        return c;
    }
    Choice::Nothing
}

fn pick_l0(
    l0: &[&FileMeta],
    l1: &[&FileMeta],
    busy: &BTreeSet<u64>,
    deepest_used: u32,
    moves: bool,
) -> Option<Choice> {
    // L0 files may overlap each other and must merge together, oldest data included: all or nothing.
    if l0.iter().any(|f| busy.contains(&f.id)) || l0.is_empty() {
        return None;
    }
    let (lo, hi) = key_span(l0)?;
    let ov: Vec<&FileMeta> = l1.iter().filter(|f| overlaps(f, &lo, &hi)).copied().collect();
    if ov.iter().any(|f| busy.contains(&f.id)) {
        return None;
    }
    // Disjoint L0 files that overlap nothing in L1 (a sequential load) already form valid L1 files: re-level
    // them without rewriting a byte.
    let mut sorted = l0.to_vec();
    sorted.sort_by(|a, b| a.smallest_key.cmp(&b.smallest_key));
    if moves && ov.is_empty() && sorted.windows(2).all(|w| w[0].largest_key < w[1].smallest_key) {
        return Some(Choice::Move {
            files: l0.iter().map(|f| f.id).collect(),
            to_level: 1,
        });
    }
    Some(Choice::Merge {
        level: 0,
        inputs: l0.iter().map(|f| f.id).collect(),
        overlapping: ov.iter().map(|f| f.id).collect(),
        output_level: 1,
        bottommost: deepest_used <= 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn f(id: u64, level: u32, lo: &str, hi: &str, size: u64) -> FileMeta {
        FileMeta {
            id,
            cf: 0,
            level,
            size,
            entries: 1,
            smallest_key: Bytes::from(lo.to_string()),
            largest_key: Bytes::from(hi.to_string()),
            smallest_seq: id,
            largest_seq: id,
        }
    }

    fn cfg() -> PickerConfig {
        PickerConfig {
            l0_trigger: 4,
            l0_critical: 8,
            base_level_bytes: 100,
            multiplier: 10,
            max_level: 6,
            l0_moves: true,
        }
    }

    #[test]
    fn disjoint_l0_files_clear_of_l1_move_without_a_rewrite() {
        let mut files = vec![
            f(1, 0, "c", "d", 10),
            f(2, 0, "e", "f", 10),
            f(3, 0, "g", "h", 10),
            f(4, 0, "i", "j", 10),
            f(10, 1, "a", "b", 10),
        ];
        assert_eq!(
            choose(&files, &cfg(), &BTreeSet::new()),
            Choice::Move {
                files: vec![1, 2, 3, 4],
                to_level: 1
            }
        );
        let full = PickerConfig {
            l0_moves: false,
            ..cfg()
        };
        assert!(
            matches!(choose(&files, &full, &BTreeSet::new()), Choice::Merge { .. }),
            "a full compaction rewrites L0"
        );
        // Two L0 files sharing a key, or one touching L1, must merge.
        files[1] = f(2, 0, "d", "f", 10);
        assert!(matches!(
            choose(&files, &cfg(), &BTreeSet::new()),
            Choice::Merge { .. }
        ));
        files[1] = f(2, 0, "e", "f", 10);
        files[4] = f(10, 1, "a", "c", 10);
        assert!(matches!(
            choose(&files, &cfg(), &BTreeSet::new()),
            Choice::Merge { .. }
        ));
    }

    #[test]
    fn nothing_below_thresholds() {
        let files = vec![f(1, 0, "a", "c", 10), f(2, 1, "a", "z", 50)];
        assert_eq!(choose(&files, &cfg(), &BTreeSet::new()), Choice::Nothing);
    }

    #[test]
    fn l0_trigger_merges_all_l0_with_overlapping_l1() {
        let mut files: Vec<_> = (1..=4).map(|i| f(i, 0, "c", "f", 10)).collect();
        files.push(f(10, 1, "a", "b", 10));
        files.push(f(11, 1, "d", "e", 10));
        files.push(f(12, 1, "g", "h", 10));
        match choose(&files, &cfg(), &BTreeSet::new()) {
            Choice::Merge {
                level: 0,
                inputs,
                overlapping,
                output_level: 1,
                bottommost: true,
            } => {
                assert_eq!(inputs, vec![1, 2, 3, 4]);
                assert_eq!(overlapping, vec![11]);
            }
            c => panic!("unexpected {c:?}"),
        }
        let busy: BTreeSet<u64> = [2].into();
        assert_eq!(
            choose(&files, &cfg(), &busy),
            Choice::Nothing,
            "L0 merges all-or-nothing"
        );
    }

    #[test]
    fn overfull_level_prefers_a_trivial_move_and_deepest_first() {
        let files = vec![
            f(1, 1, "a", "b", 80),
            f(2, 1, "m", "n", 80),
            f(3, 2, "a", "c", 500),
            f(4, 2, "x", "z", 600),
            f(5, 3, "a", "z", 10),
        ];
        // L1 (160 > 100) and L2 (1100 > 1000) are both over target; L2 is deeper and goes first.
        match choose(&files, &cfg(), &BTreeSet::new()) {
            Choice::Merge {
                level: 2,
                output_level: 3,
                ..
            } => {}
            c => panic!("unexpected {c:?}"),
        }
        let files = vec![f(1, 1, "a", "b", 80), f(2, 1, "m", "n", 80), f(3, 2, "a", "c", 5)];
        assert_eq!(
            choose(&files, &cfg(), &BTreeSet::new()),
            Choice::Move {
                files: vec![2],
                to_level: 2
            }
        );
    }

    #[test]
    fn critical_l0_outranks_overfull_levels() {
        let mut files: Vec<_> = (1..=8).map(|i| f(i, 0, "a", "b", 1)).collect();
        files.push(f(20, 1, "c", "d", 1000));
        assert!(matches!(
            choose(&files, &cfg(), &BTreeSet::new()),
            Choice::Merge { level: 0, .. }
        ));
    }

    proptest! {
        #[test]
        fn choices_are_valid_and_move_data_deeper(
            spec in prop::collection::vec((0u32..4, 0u8..20, 0u8..20, 1u64..400), 0..30),
            busy_mask in any::<u32>(),
        ) {
            let files: Vec<FileMeta> = spec.iter().enumerate().map(|(i, (l, a, b, s))| {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                f(i as u64 + 1, *l, &format!("{lo:02}"), &format!("{hi:02}"), *s)
            }).collect();
            let busy: BTreeSet<u64> = files.iter().filter(|x| busy_mask & (1 << (x.id % 32)) != 0).map(|x| x.id).collect();
            let by_id = |id: u64| files.iter().find(|x| x.id == id).unwrap();
            match choose(&files, &cfg(), &busy) {
                Choice::Nothing => {}
                Choice::Move { files: ids, to_level } => {
                    for id in &ids {
                        let m = by_id(*id);
                        prop_assert!(!busy.contains(id));
                        prop_assert_eq!(m.level + 1, to_level);
                        prop_assert!(!files.iter().any(|o| o.level == to_level && overlaps(o, &m.smallest_key, &m.largest_key)));
                        // Moved together, the files must not overlap each other either.
                        for other in ids.iter().filter(|o| *o != id) {
                            let o = by_id(*other);
                            prop_assert!(!overlaps(o, &m.smallest_key, &m.largest_key), "moved files overlap");
                        }
                    }
                    if to_level == 1 {
                        prop_assert_eq!(ids.len(), files.iter().filter(|x| x.level == 0).count(), "L0 moves all or nothing");
                    }
                }
                Choice::Merge { level, inputs, overlapping, output_level, .. } => {
                    prop_assert_eq!(level + 1, output_level);
                    prop_assert!(!inputs.is_empty());
                    for id in inputs.iter().chain(&overlapping) {
                        prop_assert!(!busy.contains(id), "busy file chosen");
                    }
                    for id in &inputs {
                        prop_assert_eq!(by_id(*id).level, level);
                    }
                    let ins: Vec<&FileMeta> = inputs.iter().map(|i| by_id(*i)).collect();
                    let (lo, hi) = key_span(&ins).unwrap();
                    for o in files.iter().filter(|o| o.level == output_level && overlaps(o, &lo, &hi)) {
                        prop_assert!(overlapping.contains(&o.id), "an overlapping output-level file was left out");
                    }
                    if level == 0 {
                        prop_assert_eq!(inputs.len(), files.iter().filter(|x| x.level == 0).count());
                    }
                }
            }
        }
    }
}
