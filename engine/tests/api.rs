//! API behaviour: TTL from an injected clock, assert_value guards, column-family lifecycle, misuse errors.
#![allow(clippy::disallowed_methods)] // tests drive real threads, files and clocks

use cntryl_midge::prelude::*;
use cntryl_midge::{Bytes, ManualClock, MidgeError};

#[test]
fn ttl_expiry_is_judged_once_at_begin_tx_with_the_injected_clock() {
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(OpenOptions::in_memory().ttl_clock(clock.clone()).build()).unwrap();
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.put(b"session".to_vec(), b"s1".to_vec(), Some(10)).unwrap();
    tx.put(b"forever".to_vec(), b"f".to_vec(), None).unwrap();
    assert!(matches!(
        tx.put(b"zero".to_vec(), b"z".to_vec(), Some(0)),
        Err(MidgeError::InvalidArgument(_))
    ));
    tx.commit(WriteOptions::sync()).unwrap();
    clock.advance_millis(9_999);
    let before = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    clock.advance_millis(1);
    assert_eq!(
        before.get(b"session").unwrap().as_deref(),
        Some(&b"s1"[..]),
        "stable within the transaction"
    );
    let after = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert_eq!(after.get(b"session").unwrap(), None);
    assert_eq!(
        after.scan(&Query::new()).unwrap().count(),
        1,
        "scans hide expired values too"
    );
    assert_eq!(after.scan(&Query::new().reverse()).unwrap().count(), 1);
}

#[test]
fn assert_value_guards_against_changes_since_the_snapshot() {
    let engine = Engine::open(OpenOptions::in_memory().build()).unwrap();
    let mut seed = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    seed.put(b"balance".to_vec(), b"10".to_vec(), None).unwrap();
    seed.commit(WriteOptions::sync()).unwrap();

    let mut a = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    a.assert_value(b"balance".to_vec(), Some(b"10".to_vec())).unwrap();
    a.put(b"balance".to_vec(), b"5".to_vec(), None).unwrap();
    let mut b = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    b.put(b"balance".to_vec(), b"10".to_vec(), None).unwrap(); // same value: still a modification (ABA-safe)
    b.commit(WriteOptions::sync()).unwrap();
    assert!(matches!(
        a.commit(WriteOptions::sync()),
        Err(MidgeError::WriteConflict(_))
    ));

    let mut c = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    c.assert_value(b"missing".to_vec(), None).unwrap();
    c.assert_value(b"balance".to_vec(), Some(b"10".to_vec())).unwrap();
    c.commit(WriteOptions::sync()).unwrap();
    let mut d = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    d.assert_value(b"balance".to_vec(), Some(b"11".to_vec())).unwrap();
    assert!(matches!(
        d.commit(WriteOptions::sync()),
        Err(MidgeError::WriteConflict(_))
    ));
    let m = engine.get_runtime_metrics().unwrap();
    assert_eq!(m.write_conflicts_total, 2);
}

#[test]
fn column_families_persist_isolate_data_and_are_never_reused() {
    let dir = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let (users_id, tmp_id) = {
        let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
        for bad in ["", "default", "a\0b", &"x".repeat(256)] {
            assert!(
                matches!(
                    engine.create_column_family(bad),
                    Err(MidgeError::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
        let users = engine.create_column_family("users").unwrap();
        assert!(matches!(
            engine.create_column_family("users"),
            Err(MidgeError::InvalidArgument(_))
        ));
        let tmp = engine.create_column_family("tmp").unwrap();
        let mut tx = engine.begin_tx(users.id(), TransactionMode::ReadWrite).unwrap();
        tx.put(b"k".to_vec(), b"users".to_vec(), None).unwrap();
        tx.commit(WriteOptions::sync()).unwrap();
        let mut tx = engine.begin_tx(tmp.id(), TransactionMode::ReadWrite).unwrap();
        tx.put(b"k".to_vec(), b"tmp".to_vec(), None).unwrap();
        tx.commit(WriteOptions::sync()).unwrap();
        assert!(matches!(
            engine.drop_column_family(0),
            Err(MidgeError::InvalidArgument(_))
        ));
        let err = engine.drop_column_family(tmp.id()).unwrap_err();
        assert!(err.licenses_unflushed_discard(), "{err}");
        engine.drop_column_family_discarding_unflushed(tmp.id()).unwrap();
        assert!(matches!(
            engine.drop_column_family(tmp.id()),
            Err(MidgeError::NotFound)
        ));
        assert!(matches!(
            engine.begin_tx(tmp.id(), TransactionMode::ReadOnly),
            Err(MidgeError::InvalidArgument(_))
        ));
        (users.id(), tmp.id())
    };
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    let names: Vec<String> = engine
        .list_column_families()
        .unwrap()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(names, vec!["default".to_string(), "users".to_string()]);
    assert_eq!(engine.get_column_family("users").unwrap().id(), users_id);
    let tx = engine.begin_tx(users_id, TransactionMode::ReadOnly).unwrap();
    assert_eq!(tx.get(b"k").unwrap().as_deref(), Some(&b"users"[..]));
    assert!(
        engine.get_column_family("tmp").is_none(),
        "dropped data stays dropped after replay"
    );
    let again = engine.create_column_family("tmp").unwrap();
    assert!(again.id() > tmp_id, "ids are never reused");
}

#[test]
fn misuse_gets_typed_errors_not_panics() {
    let engine = Engine::open(OpenOptions::in_memory().build()).unwrap();
    let mut ro = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert!(matches!(
        ro.put(b"k".to_vec(), b"v".to_vec(), None),
        Err(MidgeError::InvalidArgument(_))
    ));
    assert!(matches!(
        ro.delete(b"k".to_vec()),
        Err(MidgeError::InvalidArgument(_))
    ));
    ro.commit(WriteOptions::sync()).unwrap();
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    assert!(matches!(
        tx.put(vec![], b"v".to_vec(), None),
        Err(MidgeError::InvalidArgument(_))
    ));
    assert!(matches!(
        tx.put(vec![1; 64 * 1024 + 1], vec![], None),
        Err(MidgeError::InvalidArgument(_))
    ));
    assert!(matches!(
        tx.delete_range(b"z".to_vec(), b"a".to_vec()),
        Err(MidgeError::InvalidArgument(_))
    ));
    assert!(matches!(
        tx.scan(&Query::new().start_key(Bytes::from("z")).end_key(Bytes::from("a"))),
        Err(MidgeError::InvalidArgument(_))
    ));
    tx.put(b"k".to_vec(), b"v".to_vec(), None).unwrap();
    assert!(matches!(
        tx.insert(b"k".to_vec(), b"w".to_vec(), None),
        Err(MidgeError::InvalidArgument(_))
    ));
    for opts in [WriteOptions::cloud_async(), WriteOptions::cloud_strict()] {
        let mut t = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        t.put(b"c".to_vec(), b"v".to_vec(), None).unwrap();
        assert!(matches!(t.commit(opts), Err(MidgeError::InvalidArgument(_))));
    }
    assert!(matches!(
        engine.begin_tx(99, TransactionMode::ReadOnly),
        Err(MidgeError::InvalidArgument(_))
    ));
    tx.commit(WriteOptions::sync()).unwrap();
    let mut ins = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    ins.insert(b"k".to_vec(), b"again".to_vec(), None).unwrap();
    assert!(matches!(
        ins.commit(WriteOptions::sync()),
        Err(MidgeError::InvalidArgument(_))
    ));
    assert!(matches!(
        engine.verify_storage(std::time::Duration::from_secs(1)),
        Err(MidgeError::NotSupported(_))
    ));
}

/// The keys a scan returns, as strings.
fn scan_keys(tx: &Transaction, q: &Query) -> Vec<String> {
    tx.scan(q)
        .unwrap()
        .try_collect()
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect()
}

#[test]
fn reverse_prefix_and_limit_scans_follow_the_query_contract() {
    let engine = Engine::open(OpenOptions::in_memory().build()).unwrap();
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    for k in ["user:1", "user:2", "user:3", "uses", "order:1", "\u{ff}x"] {
        tx.put(k.as_bytes().to_vec(), k.as_bytes().to_vec(), None)
            .unwrap();
    }
    tx.commit(WriteOptions::sync()).unwrap();
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    let keys = |q: Query| scan_keys(&tx, &q);
    let user = || Query::new().prefix(Bytes::from("user:"));
    let cases: [(Query, &[&str]); 5] = [
        (user(), &["user:1", "user:2", "user:3"]),
        (user().reverse().limit(2), &["user:3", "user:2"]),
        (user().start_key(Bytes::from("user:2")), &["user:2", "user:3"]),
        (user().end_key(Bytes::from("user:3")), &["user:1", "user:2"]),
        // An explicit range wider than the prefix still returns only prefixed keys.
        (
            user().start_key(Bytes::from("a")).end_key(Bytes::from("z")),
            &["user:1", "user:2", "user:3"],
        ),
    ];
    for (q, want) in cases {
        assert_eq!(keys(q.clone()), want, "{q:?}");
    }
    // A prefix with no successor (all 0xFF) is bounded below only.
    assert_eq!(
        keys(Query::new().prefix(Bytes::from_static(&[0xc3, 0xbf]))),
        ["\u{ff}x"]
    );
    assert!(keys(Query::new().prefix(Bytes::from_static(&[0xff]))).is_empty());
    assert!(keys(Query::new().limit(0)).is_empty());
    assert!(keys(Query::new().start_key(Bytes::from("b")).end_key(Bytes::from("b"))).is_empty());
    let mut it = tx.scan(&Query::new()).unwrap();
    assert_eq!(it.by_ref().count(), 6);
    assert!(it.exhausted() && it.status().is_ok());
}

/// Scans skip tables wholly outside their bounds: an exclusive end equal to a table's smallest key excludes
/// that table, an inclusive one (a reverse scan's start) does not.
#[test]
fn scans_at_table_edges_keep_exactly_the_keys_in_bounds() {
    let dir = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    let cf = engine.get_column_family("default").unwrap();
    for batch in [["a", "b", "c"], ["m", "n", "o"]] {
        let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
        for k in batch {
            tx.put(k.as_bytes().to_vec(), k.as_bytes().to_vec(), None)
                .unwrap();
        }
        tx.commit(WriteOptions::buffered()).unwrap();
        engine.flush_cf(&cf).unwrap();
    }
    let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly).unwrap();
    let keys = |q: Query| scan_keys(&tx, &q).concat();
    assert_eq!(keys(Query::new().end_key(Bytes::from("m"))), "abc");
    assert_eq!(keys(Query::new().end_key(Bytes::from("m")).reverse()), "cba");
    assert_eq!(
        keys(Query::new().start_key(Bytes::from("c")).end_key(Bytes::from("n"))),
        "cm"
    );
    assert_eq!(
        keys(Query::new().start_key(Bytes::from("d")).end_key(Bytes::from("m"))),
        ""
    );
    assert_eq!(keys(Query::new().start_key(Bytes::from("o"))), "o");
    assert_eq!(keys(Query::new().start_key(Bytes::from("p"))), "");
}

/// A transaction keeps one view of its column family's memtables and tables across reads; flushes,
/// compactions and drops between its reads must neither change what it sees nor leave it reading stale
/// sources.
#[test]
fn reads_in_one_transaction_survive_flushes_compactions_and_drops_between_them() {
    let dir = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    let cf = engine.get_column_family("default").unwrap();
    let put = |k: &str, v: &str| {
        let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
        tx.put(k.as_bytes().to_vec(), v.as_bytes().to_vec(), None)
            .unwrap();
        tx.commit(WriteOptions::buffered()).unwrap();
    };
    put("a", "a1");
    put("b", "b1");
    let reader = engine.begin_tx(cf.id(), TransactionMode::ReadOnly).unwrap();
    assert_eq!(reader.get(b"a").unwrap().as_deref(), Some(&b"a1"[..]));
    for round in 0..3 {
        put("a", &format!("a{}", round + 2));
        let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
        tx.delete(b"b".to_vec()).unwrap();
        tx.commit(WriteOptions::buffered()).unwrap();
        engine.flush_cf(&cf).unwrap();
        if round == 1 {
            engine.compact_all().unwrap();
        }
        assert_eq!(
            reader.get(b"a").unwrap().as_deref(),
            Some(&b"a1"[..]),
            "round {round}"
        );
        assert_eq!(
            reader.get(b"b").unwrap().as_deref(),
            Some(&b"b1"[..]),
            "round {round}"
        );
        let rows = |tx: &Transaction, q: Query| -> Vec<(Bytes, Bytes)> {
            tx.scan(&q).unwrap().try_collect().unwrap()
        };
        let snapshot_rows = vec![
            (Bytes::from("a"), Bytes::from("a1")),
            (Bytes::from("b"), Bytes::from("b1")),
        ];
        assert_eq!(rows(&reader, Query::new()), snapshot_rows, "round {round}");
        assert_eq!(
            rows(&reader, Query::new().reverse()),
            snapshot_rows.iter().rev().cloned().collect::<Vec<_>>(),
            "round {round}"
        );
        let fresh = engine.begin_tx(cf.id(), TransactionMode::ReadOnly).unwrap();
        let want = format!("a{}", round + 2);
        assert_eq!(fresh.get(b"a").unwrap().as_deref(), Some(want.as_bytes()));
        assert_eq!(fresh.get(b"b").unwrap(), None);
        assert_eq!(
            rows(&fresh, Query::new()),
            vec![(Bytes::from("a"), Bytes::from(want.clone()))],
            "round {round}"
        );
    }

    let tmp = engine.create_column_family("tmp").unwrap();
    let mut tx = engine.begin_tx(tmp.id(), TransactionMode::ReadWrite).unwrap();
    tx.put(b"k".to_vec(), b"v".to_vec(), None).unwrap();
    tx.commit(WriteOptions::sync()).unwrap();
    let held = engine.begin_tx(tmp.id(), TransactionMode::ReadOnly).unwrap();
    assert_eq!(held.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    engine.drop_column_family_discarding_unflushed(tmp.id()).unwrap();
    assert!(
        matches!(held.get(b"k"), Err(MidgeError::InvalidArgument(_))),
        "a read after the drop is refused, not served from the cached view"
    );
    assert!(
        matches!(held.scan(&Query::new()), Err(MidgeError::InvalidArgument(_))),
        "a scan after the drop is refused, not served from the cached view"
    );
}

/// Point reads skip memtables that hold nothing their snapshot sees (empty, or only newer versions), and
/// still honour a memtable that holds only a range tombstone: a snapshot taken before later writes reads the
/// flushed values, a newer one reads the writes, the deletion and an untouched key.
#[test]
fn point_reads_see_flushed_rows_through_empty_newer_and_tombstone_only_memtables() {
    let engine = Engine::open(OpenOptions::in_memory().build()).unwrap();
    let cf = engine.get_column_family("default").unwrap();
    let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
    for k in [&b"a"[..], b"b", b"c", b"m"] {
        tx.put(k.to_vec(), [k, b"-old"].concat(), None).unwrap();
    }
    tx.commit(WriteOptions::sync()).unwrap();
    engine.flush_cf(&cf).unwrap();
    let get = |tx: &Transaction, k: &[u8]| tx.get(k).unwrap().map(|v| v.to_vec());

    // The active memtable is empty: every row comes from the table.
    let old = engine.begin_tx(cf.id(), TransactionMode::ReadOnly).unwrap();
    assert_eq!(get(&old, b"b"), Some(b"b-old".to_vec()));

    // Only a range tombstone in the memtable: it still hides the table's rows.
    let mut del = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
    del.delete_range(b"b".to_vec(), b"d".to_vec()).unwrap();
    del.commit(WriteOptions::sync()).unwrap();
    let mid = engine.begin_tx(cf.id(), TransactionMode::ReadOnly).unwrap();
    assert_eq!(get(&mid, b"b"), None);
    assert_eq!(get(&mid, b"c"), None);
    assert_eq!(get(&mid, b"a"), Some(b"a-old".to_vec()));

    // Newer versions too: the old snapshot still reads the table, a new one the memtable.
    let mut w = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
    w.put(b"a".to_vec(), b"a-new".to_vec(), None).unwrap();
    w.commit(WriteOptions::sync()).unwrap();
    for k in [&b"a"[..], b"b", b"c", b"m"] {
        assert_eq!(
            get(&old, k),
            Some([k, b"-old"].concat()),
            "old snapshot, key {k:?}"
        );
    }
    let new = engine.begin_tx(cf.id(), TransactionMode::ReadOnly).unwrap();
    assert_eq!(get(&new, b"a"), Some(b"a-new".to_vec()));
    assert_eq!(get(&new, b"b"), None);
    assert_eq!(get(&new, b"m"), Some(b"m-old".to_vec()));
    assert_eq!(
        get(&mid, b"a"),
        Some(b"a-old".to_vec()),
        "the middle snapshot predates the write"
    );
}
