use super::record::WalOp;
use super::*;
use crate::runtime::SystemClock;
use crate::storage::FileSystem;
use crate::storage::memory::MemoryFs;
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
    Wal::create(fs.clone(), Arc::new(SystemClock::new()), 1 << 20, next, &[]).unwrap()
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
fn an_all_zero_tail_is_torn_and_garbage_never_panics() {
    let (_m, fs) = setup();
    let wal = open_wal(&fs, 1);
    let l1 = wal.append(&rec(1, "a")).unwrap();
    wal.sync_to(l1).unwrap();
    let mut data = seg_bytes(&fs, 1);
    data.extend_from_slice(&[0u8; 4096]);
    write_seg(&fs, 1, &data);
    let (seen, rep) = collect(&fs, RecoveryPolicy::Strict).unwrap();
    assert_eq!(seen, vec![1]);
    assert_eq!(rep.torn_tail_bytes, 4096);
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
