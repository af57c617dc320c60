use super::record::WalOp;
use super::*;
use crate::runtime::SystemClock;
use crate::storage::memory::MemoryFs;
use crate::storage::{FileSystem, OpenMode};
use bytes::Bytes;

fn rec(begin: u64, key: &str) -> TxnRecord {
    TxnRecord {
        cf: 0,
        begin_seq: begin,
        ops: vec![WalOp::Put {
            key: Bytes::from(key.to_string()),
            value: Bytes::from_static(b"v"),
            expiry: None,
        }],
    }
}

fn setup() -> (MemoryFs, SharedFs) {
    let m = MemoryFs::new();
    m.mkdir_all(WAL_DIR).unwrap();
    let fs: SharedFs = Arc::new(m.clone());
    (m, fs)
}

fn open_wal(fs: &SharedFs, next: u64) -> Wal {
    Wal::create(
        fs.clone(),
        Arc::new(SystemClock::new()),
        1 << 20,
        next,
        &[],
        false,
    )
    .unwrap()
}

fn collect(fs: &SharedFs, policy: RecoveryPolicy) -> MidgeResult<(Vec<u64>, ReplayReport)> {
    let mut seen = Vec::new();
    let rep = replay(fs, policy, true, |r| {
        seen.push(r.begin_seq);
        Ok(())
    })?;
    Ok((seen, rep))
}

fn seg_bytes(fs: &SharedFs, id: u64) -> Vec<u8> {
    fs.open(&segment_path(id), OpenMode::Read)
        .unwrap()
        .read_all()
        .unwrap()
}

fn write_seg(fs: &SharedFs, id: u64, data: &[u8]) {
    let f = fs.open(&segment_path(id), OpenMode::CreateTruncate).unwrap();
    f.write_at(0, data).unwrap();
}

#[test]
fn appended_and_synced_records_replay_in_order() {
    let (_m, fs) = setup();
    let wal = open_wal(&fs, 1);
    for i in 0..10 {
        let lsn = wal.append(&rec(1 + i * 3, "k")).unwrap();
        wal.sync_to(lsn).unwrap();
    }
    let (seen, rep) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen, (0..10).map(|i| 1 + i * 3).collect::<Vec<_>>());
    assert_eq!(rep.records, 10);
    assert_eq!(rep.torn_tail_bytes, 0);
    assert_eq!(rep.max_seq, 28 + 2);
}

#[test]
fn torn_tail_is_truncated_and_reported_under_both_policies() {
    for policy in [RecoveryPolicy::Strict, RecoveryPolicy::Salvage] {
        let (_m, fs) = setup();
        let wal = open_wal(&fs, 1);
        let l1 = wal.append(&rec(1, "a")).unwrap();
        wal.sync_to(l1).unwrap();
        wal.append(&rec(4, "b")).unwrap();
        let full = seg_bytes(&fs, 1);
        write_seg(&fs, 1, &full[..full.len() - 3]);
        let (seen, rep) = collect(&fs, policy).unwrap();
        assert_eq!(seen, vec![1]);
        assert!(rep.torn_tail_bytes > 0);
        assert_eq!(
            seg_bytes(&fs, 1).len() as u64,
            l1,
            "tail truncated to the valid prefix"
        );
        assert!(rep.salvaged.is_none());
    }
}

#[test]
fn corruption_of_a_synced_frame_fails_strict_and_salvage_keeps_the_prefix() {
    let (_m, fs) = setup();
    let wal = open_wal(&fs, 1);
    let l1 = wal.append(&rec(1, "a")).unwrap();
    wal.sync_to(l1).unwrap();
    let l2 = wal.append(&rec(4, "b")).unwrap();
    wal.sync_to(l2).unwrap();
    // This frame records that the segment was synced through l2, proving frame 2 was durable.
    let l3 = wal.append(&rec(7, "c")).unwrap();
    wal.sync_to(l3).unwrap();
    let mut data = seg_bytes(&fs, 1);
    data[l1 as usize + 20] ^= 0x40;
    write_seg(&fs, 1, &data);
    let err = collect(&fs, RecoveryPolicy::Strict).unwrap_err();
    assert!(matches!(err, MidgeError::RecoveryFailed(_)), "{err}");
    let (seen, rep) = collect(&fs, RecoveryPolicy::Salvage).unwrap();
    assert_eq!(seen, vec![1], "salvage never skips the hole to apply later data");
    assert!(rep.salvaged.is_some());
    assert!(fs.exists(&format!("{}.corrupt", segment_path(1))).unwrap());
    // After salvage the log is consistent again, even under Strict.
    let (seen, _) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen, vec![1]);
}

#[test]
fn a_damaged_unsynced_frame_followed_by_an_unsynced_frame_is_a_torn_tail() {
    let (_m, fs) = setup();
    let wal = open_wal(&fs, 1);
    let l1 = wal.append(&rec(1, "a")).unwrap();
    wal.sync_to(l1).unwrap();
    wal.append(&rec(4, "b")).unwrap();
    wal.append(&rec(7, "c")).unwrap();
    let mut data = seg_bytes(&fs, 1);
    data[l1 as usize + 20] ^= 0x40;
    write_seg(&fs, 1, &data);
    let (seen, rep) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen, vec![1]);
    assert!(rep.torn_tail_bytes > 0);
}

#[test]
fn a_torn_sealed_segment_is_corruption() {
    let (_m, fs) = setup();
    let wal = open_wal(&fs, 1);
    wal.append(&rec(1, "a")).unwrap();
    wal.append(&rec(4, "b")).unwrap();
    wal.rotate().unwrap();
    let l = wal.append(&rec(7, "c")).unwrap();
    wal.sync_to(l).unwrap();
    let data = seg_bytes(&fs, 1);
    write_seg(&fs, 1, &data[..data.len() - 1]);
    assert!(matches!(
        collect(&fs, RecoveryPolicy::Strict),
        Err(MidgeError::RecoveryFailed(_))
    ));
}

#[test]
fn an_all_zero_tail_is_the_unused_end_and_garbage_never_panics() {
    let (_m, fs) = setup();
    let wal = open_wal(&fs, 1);
    let l1 = wal.append(&rec(1, "a")).unwrap();
    wal.sync_to(l1).unwrap();
    let mut data = seg_bytes(&fs, 1);
    data.extend_from_slice(&[0u8; 4096]);
    write_seg(&fs, 1, &data);
    let (seen, rep) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen, vec![1]);
    // Zeros hold no frame: the preallocated (or never written) end of the segment, trimmed, not "torn".
    assert_eq!(rep.torn_tail_bytes, 0);
    assert_eq!(seg_bytes(&fs, 1).len() as u64, l1, "zero tail trimmed");
    // A partial frame before the zeros is still a torn tail.
    let mut data = seg_bytes(&fs, 1);
    data.extend_from_slice(&[7u8; 9]);
    data.extend_from_slice(&[0u8; 4096]);
    write_seg(&fs, 1, &data);
    let (seen, rep) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen, vec![1]);
    assert!(rep.torn_tail_bytes > 0);
    assert_eq!(seg_bytes(&fs, 1).len() as u64, l1);
    for seed in 0..50u64 {
        let mut rng = crate::runtime::SeededRng::new(seed);
        let junk: Vec<u8> = (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect();
        write_seg(&fs, 1, &junk);
        let _ = collect(&fs, RecoveryPolicy::Strict);
        let _ = collect(&fs, RecoveryPolicy::Salvage);
    }
}

#[test]
fn release_removes_only_covered_sealed_segments() {
    let (_m, fs) = setup();
    let wal = open_wal(&fs, 1);
    wal.append(&rec(1, "a")).unwrap();
    wal.rotate().unwrap();
    wal.append(&rec(4, "b")).unwrap();
    wal.rotate().unwrap();
    assert_eq!(wal.segment_count(), 3);
    assert_eq!(
        wal.sealed_segments(),
        vec![(1, 3), (2, 6)],
        "a sealed segment records the highest sequence it logged"
    );
    assert_eq!(wal.release_upto(3).unwrap(), 1);
    assert!(!fs.exists(&segment_path(1)).unwrap());
    assert!(fs.exists(&segment_path(2)).unwrap());
    assert_eq!(
        wal.release_upto(100).unwrap(),
        1,
        "the active segment is never released"
    );
}

#[test]
fn group_commit_shares_one_fsync() {
    let (m, fs) = setup();
    let wal = open_wal(&fs, 1);
    let a = wal.append(&rec(1, "a")).unwrap();
    let b = wal.append(&rec(4, "b")).unwrap();
    let before = m.sync_count();
    wal.sync_to(b).unwrap();
    wal.sync_to(a).unwrap();
    assert_eq!(
        m.sync_count() - before,
        1,
        "the second waiter was covered by the first fsync"
    );
}

fn open_preallocated(fs: &SharedFs, next: u64, segment: u64) -> Wal {
    Wal::create(fs.clone(), Arc::new(SystemClock::new()), segment, next, &[], true).unwrap()
}

#[test]
fn preallocated_segments_replay_after_a_crash_and_seal_trimmed() {
    let (_m, fs) = setup();
    let wal = open_preallocated(&fs, 1, 6 << 20);
    assert_eq!(
        seg_bytes(&fs, 1).len() as u64,
        PREALLOC_STEP,
        "the active segment is preallocated ahead of the appends"
    );
    let mut lsn = 0;
    let mut begin = 1;
    // Enough records to seal one segment and start the next.
    while wal.active_segment_id() == 1 {
        lsn = wal.append(&rec(begin, "key-with-some-length")).unwrap();
        begin += 3;
    }
    wal.sync_to(lsn).unwrap();
    let sealed = seg_bytes(&fs, 1);
    assert!(
        sealed.len() as u64 >= 6 << 20,
        "the reservation grew with the appends"
    );
    assert!(
        matches!(
            scan_segment("sealed", &Bytes::from(sealed.clone())).1,
            SegmentEnd::Clean
        ),
        "the sealed segment ends at its last frame"
    );
    assert_eq!(seg_bytes(&fs, 2).len() as u64, PREALLOC_STEP);
    let l = wal.append(&rec(begin, "last")).unwrap();
    wal.sync_to(l).unwrap();
    // Crash: no close, the active segment keeps its zero tail.
    drop(wal);
    let (seen, rep) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen.len() as u64, rep.records);
    assert_eq!(seen.last(), Some(&begin));
    assert_eq!(rep.torn_tail_bytes, 0);
    assert!(rep.salvaged.is_none());
    assert!(
        seg_bytes(&fs, 2).len() < 1024,
        "the active segment's zero tail was trimmed at replay"
    );
}

/// Sealing a preallocated segment when a commit fills it costs that commit one fsync (the trimmed segment's
/// frames and new length together) when the segment's name is already durable, else one more for the
/// directory; creating the next segment does not sync the directory. The first fsync round that covers the
/// new segment names it. (Before: frames, then trimmed length, then directory — three syncs every time.)
#[test]
fn sealing_a_segment_costs_one_fsync_once_it_is_named() {
    let (m, fs) = setup();
    let wal = open_preallocated(&fs, 1, 64 << 10);
    let mut begin = 1;
    let fill = |wal: &Wal, seg: u64, begin: &mut u64| loop {
        let before = m.sync_count();
        wal.append(&rec(*begin, "key-with-some-length")).unwrap();
        *begin += 3;
        if wal.active_segment_id() == seg + 1 {
            break m.sync_count() - before;
        }
        assert_eq!(m.sync_count(), before, "a buffered append never syncs");
    };
    // Segment 1 was named when the WAL was created.
    assert_eq!(fill(&wal, 1, &mut begin), 1, "segment 1 sealed with one fsync");
    // Segment 2 is not named yet: sealing it also syncs the directory (which names segment 3 too).
    assert_eq!(fill(&wal, 2, &mut begin), 2, "segment 2 sealed, directory synced");
    assert_eq!(
        fill(&wal, 3, &mut begin),
        1,
        "segment 3 was named by that directory sync"
    );
    // Segment 4 is unnamed: the first round covering it syncs the directory, later rounds do not.
    let before = m.sync_count();
    let l = wal.append(&rec(begin, "a")).unwrap();
    wal.sync_to(l).unwrap();
    assert_eq!(m.sync_count() - before, 2, "fsync, then the directory");
    let before = m.sync_count();
    let l = wal.append(&rec(begin + 3, "b")).unwrap();
    begin += 6;
    wal.sync_to(l).unwrap();
    assert_eq!(m.sync_count() - before, 1, "named: one fsync");
    assert_eq!(fill(&wal, 4, &mut begin), 1, "segment 4 was named by the round");
    for seg in 1..=4 {
        assert!(matches!(
            scan_segment("sealed", &Bytes::from(seg_bytes(&fs, seg))).1,
            SegmentEnd::Clean
        ));
    }
}

/// A segment a rotation created without syncing the directory holds no frame that counts as durable until the
/// directory is synced: a sync commit in it survives a power loss that drops every unsynced change, names
/// included; a buffered append there may vanish with the segment, but never leaves a hole before a durable one.
#[test]
fn frames_synced_in_a_new_segment_survive_a_power_loss() {
    use crate::storage::FileSystem;
    use crate::storage::sim::{PersistenceModel, SimFs};
    let sim = SimFs::new();
    sim.mkdir_all(WAL_DIR).unwrap();
    sim.sync_dir("").unwrap();
    let fs: SharedFs = Arc::new(sim.clone());
    let wal = open_preallocated(&fs, 1, 64 << 10);
    let mut begin = 1;
    while wal.active_segment_id() == 1 {
        wal.append(&rec(begin, "key-with-some-length")).unwrap();
        begin += 3;
    }
    // Power loss now: segment 2 was created unnamed; segment 1 was sealed (fsynced) by the rotation.
    let img: SharedFs = Arc::new(sim.crash_image(PersistenceModel::DropUnsynced, 1));
    let (seen, _) = collect(&img, RecoveryPolicy::Strict).unwrap();
    assert_eq!(
        seen.last(),
        Some(&(begin - 3)),
        "the sealed segment survives whole"
    );
    let synced = wal.append(&rec(begin, "synced")).unwrap();
    wal.sync_to(synced).unwrap();
    wal.append(&rec(begin + 3, "buffered")).unwrap();
    for model in [
        PersistenceModel::DropUnsynced,
        PersistenceModel::RandomPrefix,
        PersistenceModel::PageTear,
    ] {
        let img: SharedFs = Arc::new(sim.crash_image(model, 7));
        let (seen, _) = collect(&img, RecoveryPolicy::Strict).unwrap();
        assert!(
            seen.contains(&begin),
            "{model:?}: the synced commit in segment 2 was lost"
        );
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 3),
            "{model:?}: a hole in {seen:?}"
        );
    }
    // Segment 3 is created unnamed (segment 2 was named by that round) and filled with buffered appends only;
    // the rotation that seals it makes its frames durable, so it must name it too.
    begin += 6;
    let mut last = 0;
    while wal.active_segment_id() < 4 {
        last = wal.append(&rec(begin, "key-with-some-length")).unwrap();
        begin += 3;
    }
    let sealed_to = begin - 3;
    assert!(wal.synced_lsn() >= last, "sealing counted segment 3 as synced");
    let img: SharedFs = Arc::new(sim.crash_image(PersistenceModel::DropUnsynced, 3));
    let (seen, _) = collect(&img, RecoveryPolicy::Strict).unwrap();
    assert_eq!(
        seen.last(),
        Some(&sealed_to),
        "segment 3 was sealed, so it survives whole"
    );
}

#[test]
fn trim_at_close_leaves_only_frames() {
    let (_m, fs) = setup();
    let wal = open_preallocated(&fs, 1, 1 << 20);
    let l = wal.append(&rec(1, "a")).unwrap();
    wal.sync_to(l).unwrap();
    wal.trim_active();
    assert_eq!(seg_bytes(&fs, 1).len() as u64, l);
    // Appends after a trim still work and replay.
    let l2 = wal.append(&rec(4, "b")).unwrap();
    wal.sync_to(l2).unwrap();
    let (seen, _) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen, vec![1, 4]);
}

#[test]
fn deferred_frames_are_written_by_the_covering_sync_and_keep_log_order() {
    let (m, fs) = setup();
    let wal = open_preallocated(&fs, 1, 1 << 20);
    let a = wal.append_deferred(&rec(1, "a")).unwrap();
    let b = wal.append_deferred(&rec(4, "b")).unwrap();
    assert_eq!(wal.appended_lsn(), b);
    assert!(
        seg_bytes(&fs, 1).iter().all(|&x| x == 0),
        "a deferred frame waits for its fsync round"
    );
    // A plain append writes the pending frames first, so the file never has a hole before it.
    let c = wal.append(&rec(7, "c")).unwrap();
    let d = wal.append_deferred(&rec(10, "d")).unwrap();
    let before = m.sync_count();
    wal.sync_to(a).unwrap();
    assert_eq!(m.sync_count() - before, 1, "one fsync covers every pending frame");
    assert!(wal.synced_lsn() >= d && c < d);
    let bytes = seg_bytes(&fs, 1);
    let (frames, end) = scan_segment("active", &Bytes::from(bytes.clone()));
    assert_eq!(frames.len(), 4);
    assert!(matches!(end, SegmentEnd::Zeros(at) if at == d));
    assert!(
        bytes[d as usize..(d + ZERO_AHEAD) as usize]
            .iter()
            .all(|&x| x == 0),
        "zeros written ahead of the frames"
    );
    drop(wal);
    let (seen, rep) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen, vec![1, 4, 7, 10]);
    assert_eq!(rep.torn_tail_bytes, 0);
}

#[test]
fn concurrent_deferred_sync_commits_all_become_durable() {
    if !crate::runtime::THREADS {
        return; // wasm32: no threads to race
    }
    let (m, fs) = setup();
    race_sync_commits(&m, &fs, open_preallocated(&fs, 1, 1 << 16), true);
}

/// 8 threads × 50 sync commits (deferred frames or plain appends): at most one fsync per commit, and every
/// commit replays, in log order.
fn race_sync_commits(m: &MemoryFs, fs: &SharedFs, wal: Wal, deferred: bool) {
    let wal = Arc::new(wal);
    let commit = std::sync::Mutex::new(1u64);
    let before = m.sync_count();
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                for _ in 0..50 {
                    let _c = deferred.then(|| wal.sync_committer());
                    let lsn = {
                        let mut c = commit.lock().unwrap();
                        let r = rec(*c, "k");
                        let lsn = if deferred {
                            wal.append_deferred(&r)
                        } else {
                            wal.append(&r)
                        }
                        .unwrap();
                        *c += 3;
                        lsn
                    };
                    wal.sync_to(lsn).unwrap();
                    assert!(wal.synced_lsn() >= lsn);
                }
            });
        }
    });
    let syncs = m.sync_count() - before;
    assert!(syncs <= 400, "{syncs} fsyncs for 400 commits");
    drop(wal);
    let (seen, _) = collect(fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen.len(), 400);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn concurrent_sync_commits_share_fsyncs_and_all_become_durable() {
    if !crate::runtime::THREADS {
        return; // wasm32: no threads to race (the inline executor path is covered by the other tests)
    }
    let (m, fs) = setup();
    race_sync_commits(&m, &fs, open_wal(&fs, 1), false);
}

#[test]
fn zero_chunks_at_the_end_are_not_read_into_memory_but_frames_of_zeros_still_replay() {
    let (_m, fs) = setup();
    let wal = open_preallocated(&fs, 1, 64 << 20);
    let l1 = wal.append(&rec(1, "a")).unwrap();
    // A record whose value is 3 MiB of zeros: its frame ends in whole chunks of zeros.
    let big = TxnRecord {
        cf: 0,
        begin_seq: 4,
        ops: vec![WalOp::Put {
            key: Bytes::from_static(b"z"),
            value: Bytes::from(vec![0u8; 3 << 20]),
            expiry: None,
        }],
    };
    let l2 = wal.append(&big).unwrap();
    wal.sync_to(l2).unwrap();
    let f = fs.open(&segment_path(1), OpenMode::Read).unwrap();
    let (data, zeros) = read_segment(&*f).unwrap();
    assert_eq!(data.len() as u64 + zeros, PREALLOC_STEP);
    assert!((data.len() as u64) < l2, "trailing zero chunks are left out");
    let (seen, rep) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen, vec![1, 4]);
    assert_eq!(rep.torn_tail_bytes, 0);
    assert_eq!(seg_bytes(&fs, 1).len() as u64, l2);
    assert!(l1 < l2);
}

/// A segment is read straight into place: zero runs between log bytes are kept, a zero tail is counted and
/// left out, across 1 MiB read chunks.
#[test]
fn read_segment_keeps_inner_zero_runs_and_counts_the_zero_tail() {
    let fs = MemoryFs::new();
    let f = fs.open("seg", OpenMode::CreateTruncate).unwrap();
    let mib = 1usize << 20;
    let mut want = vec![7u8; 1000];
    want.resize(1000 + 2 * mib + 5, 0);
    want.extend_from_slice(&[9u8; 300]);
    let mut file = want.clone();
    file.resize(want.len() + 3 * mib, 0);
    f.write_at(0, &file).unwrap();
    let (data, zeros) = read_segment(&*f).unwrap();
    // The tail counted as zeros starts at the first all-zero chunk after the last byte of log.
    assert_eq!(data.len() as u64 + zeros, file.len() as u64);
    assert_eq!(&data[..want.len()], &want[..]);
    assert!(data[want.len()..].iter().all(|b| *b == 0));
    assert!(zeros >= 2 * mib as u64, "zeros {zeros}");
}
