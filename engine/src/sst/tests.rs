use super::*;
use crate::storage::memory::MemoryFs;
use crate::storage::{FileSystem, OpenMode};
use crate::types::{Entry, EntryKind, Found, RangeTombstone, cmp_internal};
use bytes::Bytes;
use proptest::prelude::*;
use std::ops::Bound;
use std::sync::Arc;

fn opts(block: usize) -> SstOptions {
    SstOptions {
        block_size: block,
        compress: true,
        bloom_bits_per_key: 10,
    }
}

fn build(
    fs: &MemoryFs,
    name: &str,
    entries: &[Entry],
    tombs: &[RangeTombstone],
    block: usize,
) -> writer::SstMeta {
    let f = fs.open(name, OpenMode::CreateNew).unwrap();
    let mut w = SstWriter::new(f, name.into(), opts(block));
    for t in tombs {
        w.add_range_tombstone(t.clone());
    }
    for e in entries {
        w.add(e).unwrap();
    }
    w.finish().unwrap()
}

fn open(fs: &MemoryFs, name: &str, cache: bool) -> MidgeResultReader {
    let f = fs.open(name, OpenMode::Read).unwrap();
    SstReader::open(
        f,
        name.into(),
        1,
        cache.then(|| Arc::new(BlockCache::new(1 << 20))),
        Arc::default(),
    )
}

type MidgeResultReader = crate::error::MidgeResult<SstReader>;

fn entry(k: &[u8], seq: u64, del: bool, expiry: Option<u64>) -> Entry {
    Entry {
        key: Bytes::copy_from_slice(k),
        seq,
        kind: if del { EntryKind::Delete } else { EntryKind::Put },
        value: if del {
            Bytes::new()
        } else {
            Bytes::from(format!("v{seq}-{}", "x".repeat((seq % 40) as usize)))
        },
        expiry,
    }
}

fn sorted(mut v: Vec<Entry>) -> Vec<Entry> {
    v.sort_by(|a, b| cmp_internal(&a.key, a.seq, &b.key, b.seq));
    v.dedup_by(|a, b| a.key == b.key && a.seq == b.seq);
    v
}

/// The visible rows of sorted versions `v` within bounds at `snapshot`: the newest version at or below the
/// snapshot decides each key.
fn model_rows(v: &[Entry], lo: &Bound<Bytes>, hi: &Bound<Bytes>, snapshot: u64) -> Vec<(Bytes, Bytes)> {
    let mut rows = Vec::new();
    let mut last: Option<&Bytes> = None;
    for e in v
        .iter()
        .filter(|e| in_bounds(&e.key, lo, hi) && e.seq <= snapshot)
    {
        if last != Some(&e.key) {
            last = Some(&e.key);
            if e.kind == EntryKind::Put {
                rows.push((e.key.clone(), e.value.clone()));
            }
        }
    }
    rows
}

fn bound(b: &Option<(Vec<u8>, bool)>) -> Bound<Bytes> {
    match b {
        None => Bound::Unbounded,
        Some((k, true)) => Bound::Included(Bytes::from(k.clone())),
        Some((k, false)) => Bound::Excluded(Bytes::from(k.clone())),
    }
}

fn in_bounds(k: &[u8], lo: &Bound<Bytes>, hi: &Bound<Bytes>) -> bool {
    (match lo {
        Bound::Included(b) => k >= b.as_ref(),
        Bound::Excluded(b) => k > b.as_ref(),
        Bound::Unbounded => true,
    }) && (match hi {
        Bound::Included(b) => k <= b.as_ref(),
        Bound::Excluded(b) => k < b.as_ref(),
        Bound::Unbounded => true,
    })
}

#[test]
fn round_trip_with_many_blocks_versions_and_tombstones() {
    let fs = MemoryFs::new();
    let mut v = Vec::new();
    for i in 0..2000u64 {
        let k = format!("key{:05}", i / 3);
        v.push(entry(
            k.as_bytes(),
            10_000 - i,
            i % 7 == 0,
            (i % 5 == 0).then_some(i),
        ));
    }
    let v = sorted(v);
    let tombs = vec![RangeTombstone {
        start: Bytes::from("a"),
        end: Bytes::from("key00010"),
        seq: 5,
    }];
    let meta = build(&fs, "t.sst", &v, &tombs, 256);
    assert_eq!(meta.entries, v.len() as u64);
    assert_eq!(
        meta.smallest_key,
        Bytes::from("a"),
        "key range covers range tombstones"
    );
    let r = Arc::new(open(&fs, "t.sst", true).unwrap());
    assert_eq!(r.range_tombstones(), &tombs[..]);
    let stats = r.verify().unwrap();
    assert!(stats.data_blocks > 20, "small blocks produce many blocks");
    let all: Vec<Entry> = SstIter::new(r.clone(), Bound::Unbounded, Bound::Unbounded, false)
        .map(Result::unwrap)
        .collect();
    assert_eq!(all, v);
    let mut rev: Vec<Entry> = SstIter::new(r.clone(), Bound::Unbounded, Bound::Unbounded, true)
        .map(Result::unwrap)
        .collect();
    rev.reverse();
    assert_eq!(rev, v);
    for e in v.iter().step_by(37) {
        let newest = v.iter().find(|n| n.key == e.key).unwrap();
        assert_eq!(
            r.get(&e.key, u64::MAX).unwrap().unwrap(),
            Found::from(newest),
            "bloom has no false negatives; the newest version wins"
        );
    }
    assert!(r.get(b"nope", u64::MAX).unwrap().is_none());
}

#[test]
fn out_of_order_adds_are_rejected_and_tombstone_only_tables_work() {
    let fs = MemoryFs::new();
    let f = fs.open("x.sst", OpenMode::CreateNew).unwrap();
    let mut w = SstWriter::new(f, "x.sst".into(), opts(4096));
    w.add(&entry(b"b", 5, false, None)).unwrap();
    assert!(w.add(&entry(b"a", 9, false, None)).is_err());
    assert!(
        w.add(&entry(b"b", 6, false, None)).is_err(),
        "same key must have a lower seq"
    );
    let meta = build(
        &fs,
        "t.sst",
        &[],
        &[RangeTombstone {
            start: Bytes::from("c"),
            end: Bytes::from("f"),
            seq: 3,
        }],
        4096,
    );
    assert_eq!(meta.entries, 0);
    let r = open(&fs, "t.sst", false).unwrap();
    assert_eq!(r.range_tombstones().len(), 1);
    assert!(r.get(b"d", 10).unwrap().is_none());
    r.verify().unwrap();
}

#[test]
fn verify_catches_meta_bounds_and_bloom_filters_that_would_hide_rows() {
    let fs = MemoryFs::new();
    let v: Vec<Entry> = (0..200u64)
        .map(|i| entry(format!("k{i:03}").as_bytes(), 1000 - i, false, None))
        .collect();
    let tombs = [RangeTombstone {
        start: Bytes::from("k050"),
        end: Bytes::from("k060"),
        seq: 900,
    }];
    build(&fs, "t.sst", &v, &tombs, 256);
    open(&fs, "t.sst", false).unwrap().verify().unwrap();
    let corrupt = |r: SstReader| {
        let e = r.verify().unwrap_err();
        assert!(matches!(e, crate::error::MidgeError::Corruption(_)), "{e:?}");
    };
    // A largest key below the real one: lookups of the last keys would skip the table.
    let mut r = open(&fs, "t.sst", false).unwrap();
    r.tamper(|m| m.largest_key = Bytes::from("k100"), None);
    corrupt(r);
    // A sequence range that excludes an entry (or a tombstone).
    let mut r = open(&fs, "t.sst", false).unwrap();
    r.tamper(|m| m.largest_seq = 899, None);
    corrupt(r);
    // A bloom filter built from other keys: false negatives.
    let mut other = super::bloom::BloomBuilder::default();
    other.add(b"something else");
    let bloom = super::bloom::Bloom::decode(&other.finish(10)).unwrap();
    let mut r = open(&fs, "t.sst", false).unwrap();
    r.tamper(|_| {}, Some(bloom));
    corrupt(r);
    // A tombstone count that disagrees with the tombstone block.
    let mut r = open(&fs, "t.sst", false).unwrap();
    r.tamper(|m| m.range_tombstones = 2, None);
    corrupt(r);
}

#[test]
fn an_inverted_range_tombstone_is_corruption_not_a_silent_no_op() {
    let fs = MemoryFs::new();
    build(
        &fs,
        "inv.sst",
        &[entry(b"a", 1, false, None)],
        &[RangeTombstone {
            start: Bytes::from("f"),
            end: Bytes::from("c"),
            seq: 3,
        }],
        4096,
    );
    let err = open(&fs, "inv.sst", false).unwrap_err();
    assert!(matches!(err, crate::error::MidgeError::Corruption(_)), "{err:?}");
}

#[test]
fn every_single_byte_flip_is_detected_or_harmless() {
    let fs = MemoryFs::new();
    let v = sorted(
        (0..60u64)
            .map(|i| entry(format!("k{i:03}").as_bytes(), 100 + i, i % 9 == 0, None))
            .collect(),
    );
    build(
        &fs,
        "t.sst",
        &v,
        &[RangeTombstone {
            start: Bytes::from("k010"),
            end: Bytes::from("k020"),
            seq: 1,
        }],
        300,
    );
    let f = fs.open("t.sst", OpenMode::ReadWrite).unwrap();
    let pristine = f.read_all().unwrap();
    for i in 0..pristine.len() {
        let mut d = pristine.clone();
        d[i] ^= 0x10;
        f.write_at(0, &d).unwrap();
        let Ok(r) = open(&fs, "t.sst", false) else {
            continue;
        };
        let r = Arc::new(r);
        let verified = r.verify();
        let scanned: Result<Vec<Entry>, _> =
            SstIter::new(r.clone(), Bound::Unbounded, Bound::Unbounded, false).collect();
        match (verified, scanned) {
            (Ok(_), Ok(rows)) => assert_eq!(rows, v, "a flip at {i} changed data without detection"),
            (Err(e), _) | (_, Err(e)) => assert!(
                matches!(
                    e,
                    crate::MidgeError::Corruption(_) | crate::MidgeError::CompatibilityError(_)
                ),
                "flip at {i}: {e}"
            ),
        }
        for e in &v {
            if let Ok(Some(got)) = r.get(&e.key, u64::MAX) {
                assert_eq!(got, Found::from(e), "flip at {i} returned a wrong value");
            }
        }
    }
}

/// Short keys (with zero bytes, so some differ only by trailing zeros), or keys sharing a 15-byte prefix
/// (so searches over the 16-byte inline heads tie and must fall back to the full key).
fn model_key(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(0u8..6, 1..max),
        prop::collection::vec(0u8..6, 1..max).prop_map(|t| [vec![3u8; 15], t].concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn gets_and_cursors_match_a_model(
        raw in prop::collection::vec((model_key(4), 1u64..50, any::<bool>()), 1..200),
        lo in prop::option::of((model_key(3), any::<bool>())),
        hi in prop::option::of((model_key(3), any::<bool>())),
        snapshot in 0u64..60,
        block in 64usize..600,
    ) {
        let fs = MemoryFs::new();
        let v = sorted(raw.iter().map(|(k, s, d)| entry(k, *s, *d, None)).collect());
        build(&fs, "p.sst", &v, &[], block);
        let r = Arc::new(open(&fs, "p.sst", block % 2 == 0).unwrap());
        let (lo, hi) = (bound(&lo), bound(&hi));
        let want: Vec<Entry> = v.iter().filter(|e| in_bounds(&e.key, &lo, &hi)).cloned().collect();
        let got: Vec<Entry> = SstIter::new(r.clone(), lo.clone(), hi.clone(), false).map(Result::unwrap).collect();
        prop_assert_eq!(&got, &want);
        let mut rev: Vec<Entry> = SstIter::new(r.clone(), lo, hi, true).map(Result::unwrap).collect();
        rev.reverse();
        prop_assert_eq!(&rev, &want);
        for (k, _, _) in &raw {
            let expect = v.iter().find(|e| e.key.as_ref() == k.as_slice() && e.seq <= snapshot).map(Found::from);
            prop_assert_eq!(r.get(k, snapshot).unwrap(), expect);
        }
    }
}

/// Incompressible blocks stop paying for LZ4 after a streak, but compression resumes when the data turns
/// compressible again, and every block still round-trips.
#[test]
fn compression_backs_off_on_incompressible_data_and_resumes() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let (random, zeros) = (400u64, 4000u64);
    let v: Vec<Entry> = (0..random + zeros)
        .map(|i| Entry {
            key: Bytes::from(format!("k{i:08}")),
            seq: 1,
            kind: EntryKind::Put,
            value: Bytes::from(if i < random { noise(200) } else { vec![0u8; 200] }),
            expiry: None,
        })
        .collect();
    let fs = MemoryFs::new();
    let meta = build(&fs, "c.sst", &v, &[], 1024);
    // The compressible tail (≈ 4000 × 209 bytes raw) must have been compressed again.
    assert!(meta.size < random * 220 + zeros * 209 / 4, "size {}", meta.size);
    let r = Arc::new(open(&fs, "c.sst", false).unwrap());
    let got: Vec<Entry> = SstIter::new(r, Bound::Unbounded, Bound::Unbounded, false)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, v);
    let tried: Vec<u32> = (0..60).filter(|s| writer::try_compress(true, *s)).collect();
    assert!(!writer::try_compress(false, 0));
    assert_eq!(tried[..8], [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(tried[8..], [23, 39, 55], "one probe in 16 after giving up");
}

proptest! {
    /// The fenced search over packed keys agrees with a plain partition point, on either side of the bound,
    /// across many fences and with keys that tie on their 16-byte heads.
    #[test]
    fn packed_key_search_matches_a_partition_point(
        mut keys in prop::collection::vec(model_key(4), 0..120),
        probes in prop::collection::vec(model_key(4), 1..30),
        fixed in prop_oneof![Just(None), Just(Some(3usize)), Just(Some(16usize))],
    ) {
        // A fixed length pads or cuts every key to it with zeros (a block of fixed-size keys, whose ties on
        // the head are settled by length alone); probes keep their own lengths, shorter and longer.
        if let Some(n) = fixed {
            for k in &mut keys {
                k.resize(n, 0);
            }
        }
        keys.sort();

        let bytes = keys.iter().map(Vec::len).sum();
        let packed = cache::PackedKeys::new(keys.iter().map(Vec::as_slice), keys.len(), bytes);
        for p in probes.iter().chain(&keys) {
            prop_assert_eq!(packed.lower_bound(p, false), keys.partition_point(|k| k < p));
            prop_assert_eq!(packed.lower_bound(p, true), keys.partition_point(|k| k <= p));
            if let Some(n) = fixed {
                let mut q = p.clone();
                q.resize(n, 0);
                prop_assert_eq!(packed.lower_bound(&q, false), keys.partition_point(|k| *k < q));
                prop_assert_eq!(packed.lower_bound(&q, true), keys.partition_point(|k| *k <= q));
            }
        }
        prop_assert_eq!(packed.all_distinct(), keys.windows(2).all(|w| w[0] != w[1]));
    }

    /// Key equality and the search through the packed heads agree with bytes, for blocks whose keys all have
    /// one short length (compared by head alone) and for mixed ones, including keys that differ only by
    /// trailing zeros.
    #[test]
    fn packed_key_equality_matches_bytes(
        mut keys in prop::collection::vec(model_key(4), 1..60),
        probes in prop::collection::vec(model_key(4), 1..30),
        fixed in prop_oneof![Just(None), Just(Some(3usize)), Just(Some(16usize))],
    ) {
        // A fixed length pads or cuts every key (and probe) to it with zeros.
        let fit = |k: &Vec<u8>| fixed.map_or(k.clone(), |n| {
            let mut k = k.clone();
            k.resize(n, 0);
            k
        });
        keys = keys.iter().map(fit).collect();
        keys.sort();
        let bytes = keys.iter().map(Vec::len).sum();
        let packed = cache::PackedKeys::new(keys.iter().map(Vec::as_slice), keys.len(), bytes);
        let probes: Vec<Vec<u8>> = probes.iter().map(fit).chain(probes.iter().cloned()).collect();
        for p in probes.iter().chain(&keys) {
            // The search, whose head ties on uniform short keys are settled by the known length.
            prop_assert_eq!(packed.lower_bound(p, false), keys.partition_point(|k| k < p));
            prop_assert_eq!(packed.lower_bound(p, true), keys.partition_point(|k| k <= p));
            let head = crate::types::key_head(p);
            for (i, k) in keys.iter().enumerate() {
                prop_assert_eq!(packed.eq_at(i, p, &head), k == p, "key {:?} probe {:?}", k, p);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Visible rows read from one table alone (the merge's single-input path, with per-block "no repeated
    /// key" shortcuts and lazy skipping of a returned key's older versions) match a model, in both directions,
    /// within bounds, at any snapshot, and when the reader stops after any number of rows; tables whose keys
    /// have one version each and tables with many versions (spanning block boundaries) alike.
    #[test]
    fn single_table_visible_rows_match_a_model(
        raw in prop::collection::vec((model_key(4), 1u64..50, any::<bool>()), 1..200),
        one_version in any::<bool>(),
        fixed in any::<bool>(),
        lo in prop::option::of((model_key(3), any::<bool>())),
        hi in prop::option::of((model_key(3), any::<bool>())),
        snapshot in 0u64..60,
        block in 64usize..600,
        stop in 0usize..8,
    ) {
        use crate::iter::{Input, VisibleIter};
        let fs = MemoryFs::new();
        let fit = |k: &Vec<u8>| if fixed { let mut k = k.clone(); k.resize(16, 0); k } else { k.clone() };
        let mut v = sorted(raw.iter().map(|(k, s, d)| entry(&fit(k), *s, *d, None)).collect());
        if one_version {
            v.dedup_by(|a, b| a.key == b.key);
        }
        build(&fs, "s.sst", &v, &[], block);
        let r = Arc::new(open(&fs, "s.sst", block % 2 == 0).unwrap());
        let (lo, hi) = (bound(&lo), bound(&hi));
        let want = model_rows(&v, &lo, &hi, snapshot);
        for reverse in [false, true] {
            let rows = |n: usize| -> Vec<(Bytes, Bytes)> {
                let input = Input::Sst(SstIter::new(r.clone(), lo.clone(), hi.clone(), reverse));
                VisibleIter::new(vec![input], reverse, snapshot, 0, vec![])
                    .take(n)
                    .map(Result::unwrap)
                    .collect()
            };
            let mut all = want.clone();
            if reverse {
                all.reverse();
            }
            prop_assert_eq!(&rows(usize::MAX), &all, "reverse {}", reverse);
            prop_assert_eq!(&rows(stop), &all[..stop.min(all.len())], "reverse {} stop {}", reverse, stop);
        }
    }
}

/// A point read looks each block up in the cache once: a first read counts one miss and reads the block
/// from the file, later reads of it count hits and read nothing, and the values agree with an uncached
/// reader, including a key whose versions continue into the next block.
#[test]
fn point_reads_count_one_cache_lookup_per_block_and_reuse_cached_blocks() {
    let fs = MemoryFs::new();
    let mut v: Vec<Entry> = (0..400u32)
        .map(|i| entry(format!("k{i:05}").as_bytes(), 100, false, None))
        .collect();
    // Many versions of one key: they span several small blocks.
    v.extend((1..60).map(|s| entry(b"k00200", s, false, None)));
    let v = sorted(v);
    build(&fs, "c.sst", &v, &[], 256);
    let cache = Arc::new(BlockCache::new(1 << 20));
    let stats = Arc::new(SstStats::default());
    let f = fs.open("c.sst", OpenMode::Read).unwrap();
    let r = SstReader::open(f, "c.sst".into(), 7, Some(cache.clone()), stats.clone()).unwrap();
    let plain = open(&fs, "c.sst", false).unwrap();
    let blocks = || stats.blocks_read.load(std::sync::atomic::Ordering::Relaxed);

    let (h0, m0) = cache.hits_and_misses();
    let b0 = blocks();
    let want = Some(Found::from(&entry(b"k00300", 100, false, None)));
    assert_eq!(r.get(b"k00300", 1000).unwrap(), want);
    assert_eq!(
        cache.hits_and_misses(),
        (h0, m0 + 1),
        "one miss for the first read"
    );
    assert_eq!(blocks(), b0 + 1);
    for _ in 0..3 {
        assert_eq!(r.get(b"k00300", 1000).unwrap(), want);
    }
    assert_eq!(cache.hits_and_misses(), (h0 + 3, m0 + 1), "hits from then on");
    assert_eq!(blocks(), b0 + 1, "no block read again");

    // Old snapshots of the many-version key walk into later blocks, cold then warm.
    for round in 0..2 {
        for snap in [1, 5, 30, 59, 99, 1000] {
            let got = r.get(b"k00200", snap).unwrap();
            assert_eq!(
                got,
                plain.get(b"k00200", snap).unwrap(),
                "snapshot {snap} round {round}"
            );
            let expect = v.iter().find(|e| e.key.as_ref() == b"k00200" && e.seq <= snap);
            assert_eq!(got, expect.map(Found::from));
        }
    }
    let read = blocks();
    for snap in [1, 5, 30, 59, 99, 1000] {
        r.get(b"k00200", snap).unwrap();
    }
    assert_eq!(blocks(), read, "warm blocks are read from the cache");
    assert_eq!(r.get(b"k00200x", 1000).unwrap(), None);
}

/// The fenced search agrees with a partition point on either side of where its fences move from inline
/// (a data block's few) to the heap (an index's many), for uniform and mixed key lengths.
#[test]
fn packed_key_search_is_exact_across_inline_and_heap_fences() {
    for n in [0usize, 1, 15, 16, 17, 255, 256, 257, 272, 273, 1000] {
        for mixed in [false, true] {
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let mut k = format!("{:08}", i * 3).into_bytes();
                    if mixed && i % 3 == 0 {
                        k.extend_from_slice(b"-long-tail-past-sixteen");
                    }
                    k
                })
                .collect();
            let bytes = keys.iter().map(Vec::len).sum();
            let packed = cache::PackedKeys::new(keys.iter().map(Vec::as_slice), n, bytes);
            let probes = (0..3 * n + 2).map(|i| format!("{i:08}").into_bytes());
            for p in probes.chain(keys.iter().cloned()).chain([vec![], vec![0xff; 20]]) {
                assert_eq!(
                    packed.lower_bound(&p, false),
                    keys.partition_point(|k| *k < p),
                    "n {n} {p:?}"
                );
                assert_eq!(
                    packed.lower_bound(&p, true),
                    keys.partition_point(|k| *k <= p),
                    "n {n} {p:?}"
                );
            }
        }
    }
}

/// A key's head is its first 16 bytes, zero-padded, as two big-endian words, whatever its length.
#[test]
fn key_heads_pad_short_keys_and_cut_long_ones() {
    let key: Vec<u8> = (1..=24).collect();
    for len in 0..=key.len() {
        let mut padded = [0u8; 16];
        let n = len.min(16);
        padded[..n].copy_from_slice(&key[..n]);
        let want = [
            u64::from_be_bytes(padded[..8].try_into().unwrap()),
            u64::from_be_bytes(padded[8..].try_into().unwrap()),
        ];
        assert_eq!(crate::types::key_head(&key[..len]), want, "length {len}");
    }
}

/// A writer's fill only takes free room: it never evicts a block a read cached, and once the shards are full
/// it stops decoding blocks at all.
#[test]
fn cache_fills_take_only_free_room() {
    let block = || {
        let entries: Vec<Entry> = (0..20u32)
            .map(|i| entry(format!("k{i:03}").as_bytes(), 5, false, None))
            .collect();
        let bytes = entries.iter().map(|e| e.key.len()).sum();
        let keys = cache::PackedKeys::new(entries.iter().map(|e| e.key.as_ref()), entries.len(), bytes);
        let held = entries
            .iter()
            .map(|e| cache::heap_cost(e.key.len()) + cache::heap_cost(e.value.len()))
            .sum();
        Arc::new(cache::DecodedBlock::from_parts(entries, keys, held))
    };
    // Room for a few blocks per shard.
    let c = BlockCache::new(16 * 4 * 4096);
    c.insert(1, 0, block());
    let mut decoded = 0;
    for off in 0..2000u64 {
        c.fill(2, off, 1000, || {
            decoded += 1;
            Some(block())
        });
    }
    assert!(
        c.get(1, 0).is_some(),
        "a block a read cached is never evicted by a fill"
    );
    assert!(decoded > 16, "fills went in while there was room ({decoded})");
    assert!(
        decoded < 500,
        "a full cache stops decoding fills ({decoded} of 2000)"
    );
}

/// A decoded block of `n` keys without values.
fn keys_block(n: u32) -> Arc<cache::DecodedBlock> {
    let entries: Vec<Entry> = (0..n)
        .map(|i| entry(format!("k{i:03}").as_bytes(), 5, false, None))
        .collect();
    let bytes = entries.iter().map(|e| e.key.len()).sum();
    let keys = cache::PackedKeys::new(entries.iter().map(|e| e.key.as_ref()), entries.len(), bytes);
    Arc::new(cache::DecodedBlock::from_parts(entries, keys, 0))
}

/// Evicting deleted files drops exactly their blocks and their charge; the LRU order of what stays still works.
#[test]
fn evicting_files_drops_exactly_their_blocks() {
    let block = keys_block;
    let c = BlockCache::new(1 << 30);
    for file in 1..=3u64 {
        for off in 0..50u64 {
            c.insert(file, off, block(10));
        }
    }
    let before = c.charged_bytes();
    let one_file = before / 3;
    c.evict_files(&[2, 7]);
    assert_eq!(c.files(), [1, 3].into_iter().collect());
    assert_eq!(c.charged_bytes(), before - one_file);
    assert!(c.get(2, 0).is_none() && c.get(1, 49).is_some() && c.get(3, 0).is_some());
    c.evict_files(&[]);
    assert_eq!(c.charged_bytes(), before - one_file);
    // A small cache still evicts least recently used first after an eviction by file.
    let small = BlockCache::new(16 * 3 * block(10).footprint());
    for off in 0..200u64 {
        small.insert(5, off, block(10));
        small.insert(6, off, block(10));
    }
    small.evict_files(&[6]);
    assert_eq!(small.files(), [5].into_iter().collect());
    for off in 0..200u64 {
        small.insert(8, off, block(10));
    }
    assert_eq!(
        small.files(),
        [8].into_iter().collect(),
        "file 5's blocks were the oldest"
    );
}

/// A point lookup copies a small value out of its cached block (no shared reference count to bump, nothing
/// pinned) and shares a large one; both read back exactly.
#[test]
fn point_lookups_copy_small_values_and_share_large_ones() {
    use super::reader::COPY_VALUES_UP_TO;
    let fs = MemoryFs::new();
    let small = vec![7u8; COPY_VALUES_UP_TO];
    let large = vec![9u8; COPY_VALUES_UP_TO + 1];
    let put = |k: &str, seq: u64, v: &[u8]| Entry {
        key: Bytes::copy_from_slice(k.as_bytes()),
        seq,
        kind: EntryKind::Put,
        value: Bytes::copy_from_slice(v),
        expiry: None,
    };
    let v = vec![put("a", 1, &small), put("b", 2, &large)];
    build(&fs, "t.sst", &v, &[], 4096);
    let r = open(&fs, "t.sst", true).unwrap();
    // Twice: the second lookup is served from the cached block.
    for _ in 0..2 {
        let a = r.get(b"a", u64::MAX).unwrap().unwrap().value;
        assert_eq!(a, small);
        assert!(a.is_unique(), "a small value is a copy of its own");
        let b = r.get(b"b", u64::MAX).unwrap().unwrap().value;
        assert_eq!(b, large);
        assert!(!b.is_unique(), "a large value shares its block's buffer");
    }
}

/// The bytes charged per file follow inserts, replacements, LRU evictions and file evictions, so a
/// compaction's fill budget (its inputs' cached bytes) is what the cache really holds for them.
#[test]
fn cached_bytes_per_file_follow_inserts_and_evictions() {
    let block = || keys_block(10);
    let size = cache::block_bytes(&block());
    let c = BlockCache::new(1 << 30);
    for off in 0..20u64 {
        c.insert(1, off, block());
    }
    c.insert(1, 0, block());
    assert_eq!(c.fill(2, 0, 0, || Some(block())), size);
    assert_eq!(
        c.cached_bytes(&[1]),
        20 * size,
        "a replaced block is charged once"
    );
    assert_eq!(c.cached_bytes(&[1, 2, 9]), 21 * size);
    c.evict_files(&[1]);
    assert_eq!(c.cached_bytes(&[1, 2]), size);
    // A small cache evicts least recently used blocks: what stays charged is what the shards still hold.
    let small = BlockCache::new(16 * 3 * size);
    for off in 0..500u64 {
        small.insert(3 + off % 2, off, block());
    }
    let held = small.charged_bytes();
    assert!(held <= 16 * 3 * size && held > 0);
    assert_eq!(small.cached_bytes(&[3, 4]), held);
    assert_eq!(
        small.fill(5, 0, u64::MAX / 4, || Some(block())),
        0,
        "no room: nothing filled"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// A run of disjoint tables reads exactly as the tables' versions in key order, within bounds, in both
    /// directions, as raw versions and as visible rows (including a reader that stops early), whatever the
    /// split points, and a cut that shares a key between two tables starts a new run.
    #[test]
    fn runs_of_disjoint_tables_read_as_one_table(
        raw in prop::collection::vec((model_key(4), 1u64..50, any::<bool>()), 1..200),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        lo in prop::option::of((model_key(3), any::<bool>())),
        hi in prop::option::of((model_key(3), any::<bool>())),
        snapshot in 0u64..60,
        block in 64usize..600,
        stop in 0usize..8,
    ) {
        use crate::iter::{Cursor, Input, VisibleIter};
        let fs = MemoryFs::new();
        let v = sorted(raw.iter().map(|(k, s, d)| entry(k, *s, *d, None)).collect());
        // Cut at key boundaries only (never between two versions of one key), at arbitrary positions.
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(v.len())).filter(|&i| i > 0 && v[i - 1].key != v[i].key).collect();
        at.sort_unstable();
        at.dedup();
        let mut tables = Vec::new();
        let mut start = 0;
        for (n, end) in at.into_iter().chain([v.len()]).enumerate() {
            let name = format!("r{n}.sst");
            let meta = build(&fs, &name, &v[start..end], &[], block);
            tables.push((Arc::new(open(&fs, &name, block % 2 == 0).unwrap()), meta));
            start = end;
        }
        // Shuffled input order: the runs come out sorted and, being disjoint, as one run.
        tables.reverse();
        let runs: Vec<Vec<Arc<SstReader>>> = disjoint_runs(&mut tables, |(_, m)| (1, &m.smallest_key[..], &m.largest_key[..]))
            .map(|run| run.iter().map(|(r, _)| r.clone()).collect())
            .collect();
        prop_assert_eq!(runs.len(), 1);
        let readers = runs[0].clone();
        let (lo, hi) = (bound(&lo), bound(&hi));
        let want: Vec<Entry> = v.iter().filter(|e| in_bounds(&e.key, &lo, &hi)).cloned().collect();
        for reverse in [false, true] {
            let mut run = RunIter::new(readers.clone(), lo.clone(), hi.clone(), reverse);
            let mut got = Vec::new();
            loop {
                run.advance().unwrap();
                match run.current() {
                    Some(e) => got.push(e.clone()),
                    None => break,
                }
            }
            if reverse {
                got.reverse();
            }
            prop_assert_eq!(&got, &want, "reverse {}", reverse);
            let mut rows_want = model_rows(&v, &lo, &hi, snapshot);
            if reverse {
                rows_want.reverse();
            }
            let rows = |n: usize| -> Vec<(Bytes, Bytes)> {
                let input = Input::Run(RunIter::new(readers.clone(), lo.clone(), hi.clone(), reverse));
                VisibleIter::new(vec![input], reverse, snapshot, 0, vec![]).take(n).map(Result::unwrap).collect()
            };
            prop_assert_eq!(&rows(usize::MAX), &rows_want, "rows, reverse {}", reverse);
            prop_assert_eq!(&rows(stop), &rows_want[..stop.min(rows_want.len())], "reverse {} stop {}", reverse, stop);
        }
        // Two tables sharing a key (versions of it split between them) never form one run.
        if let Some(i) = (1..v.len()).find(|&i| v[i - 1].key == v[i].key) {
            let a = build(&fs, "a.sst", &v[..i], &[], block);
            let b = build(&fs, "b.sst", &v[i..], &[], block);
            prop_assert_eq!(disjoint_runs(&mut [a, b], |m| (1, &m.smallest_key[..], &m.largest_key[..])).count(), 2);
        }
    }
}
