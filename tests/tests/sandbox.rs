//! The host's sandbox limits: a runaway call is interrupted at its deadline and a guest that exceeds its memory
//! cap fails — both as typed errors, never a host panic, and the host keeps serving new instances.
#![allow(clippy::disallowed_methods)]

use cntryl_midge::{MidgeError, TransactionMode, WriteOptions};
use midge_host::{ComponentEngine, ComponentHost};
use std::time::Duration;

fn rows(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("key{i:09}").into_bytes(), vec![7u8; 32]))
        .collect()
}

#[test]
fn a_call_past_its_deadline_is_a_timeout_and_the_instance_is_retired() {
    let host = ComponentHost::load(midge_conformance::plugin_component()).unwrap();
    let mut timed_out = false;
    // Grow the batch until one call outlasts a 5 ms deadline (a 2M-row batch takes far longer on any machine).
    for n in [50_000, 200_000, 800_000, 2_000_000] {
        let engine = ComponentEngine::open_in_memory(&host).unwrap();
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        // Only the batch runs under the short deadline: on a loaded machine (CI's 2 cores running other
        // tests) even `begin-tx` can lose its CPU for 5 ms.
        engine.set_call_deadline(Some(Duration::from_millis(5))).unwrap();
        match tx.put_many(&rows(n)) {
            Ok(()) => continue,
            Err(MidgeError::Timeout(_)) => {
                let again = engine.begin_tx(0, TransactionMode::ReadOnly).map(|_| ());
                assert!(
                    matches!(again, Err(MidgeError::Internal(_))),
                    "a timed-out instance must refuse further calls, got {again:?}"
                );
                timed_out = true;
                break;
            }
            Err(e) => panic!("expected Timeout, got {e:?}"),
        }
    }
    assert!(timed_out, "no call overran a 5 ms deadline");
    // The host is unaffected: a new instance works.
    let engine = ComponentEngine::open_in_memory(&host).unwrap();
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.put(b"k".to_vec(), b"v".to_vec(), None).unwrap();
    tx.commit(WriteOptions::best_effort()).unwrap();
}

#[test]
fn exceeding_the_memory_cap_is_a_resource_limit_not_a_host_panic() {
    let host = ComponentHost::load(midge_conformance::plugin_component())
        .unwrap()
        .with_memory_limit(24 << 20);
    overfill_is_a_resource_limit(&host);
    let engine = ComponentEngine::open_in_memory(&host).unwrap();
    assert!(engine.get_column_family("default").is_some());
}

/// `get-short` (the component's fast point read) takes a handle and a length from the host: a handle that names
/// no live transaction, or a key longer than 24 bytes, is a typed `InvalidArgument`, and the instance keeps
/// serving.
#[test]
fn get_short_misuse_is_a_typed_error_and_the_instance_keeps_serving() {
    let host = ComponentHost::load(midge_conformance::plugin_component()).unwrap();
    let e = ComponentEngine::open_in_memory(&host).unwrap();
    let mut tx = e.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.put(b"k".to_vec(), b"v".to_vec(), None).unwrap();
    tx.commit(WriteOptions::sync()).unwrap();
    let k = [u64::from(b'k'), 0, 0];
    let tx = e.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    let h = tx.short_handle().unwrap();
    assert_eq!(e.get_short(h, 1, k).unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(tx.short_handle().unwrap(), h, "one handle per transaction");
    // Bytes past `len` are ignored.
    assert_eq!(e.get_short(h, 1, [u64::MAX, 7, 7]).unwrap(), None);
    assert_eq!(
        e.get_short(h, 1, [u64::from(b'k') | 0xff00, 7, 7])
            .unwrap()
            .as_deref(),
        Some(&b"v"[..])
    );
    for (handle, len, what) in [
        (h, 25, "a 25-byte key"),
        (h, u32::MAX, "a 4 GiB key"),
        (0, 1, "handle 0"),
        (h ^ (1 << 32), 1, "another generation of the slot"),
        (h + 1, 1, "a slot never issued"),
    ] {
        let err = e.get_short(handle, len, k).unwrap_err();
        assert!(matches!(err, MidgeError::InvalidArgument(_)), "{what}: {err}");
    }
    drop(tx);
    let err = e.get_short(h, 1, k).unwrap_err();
    assert!(
        matches!(err, MidgeError::InvalidArgument(_)),
        "a dropped transaction's handle: {err}"
    );
    // The slot is reused with a new generation: the old handle still names nothing.
    let tx = e.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    let h2 = tx.short_handle().unwrap();
    assert_ne!(h2, h);
    assert!(matches!(
        e.get_short(h, 1, k),
        Err(MidgeError::InvalidArgument(_))
    ));
    assert_eq!(e.get_short(h2, 1, k).unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(tx.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    // A committed transaction's handle fails the same way.
    let w = e.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    let hw = w.short_handle().unwrap();
    w.commit(WriteOptions::sync()).unwrap();
    assert!(matches!(
        e.get_short(hw, 1, k),
        Err(MidgeError::InvalidArgument(_))
    ));
    assert_eq!(tx.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// A host compiled without deadline checks serves as usual and keeps the rest of the sandbox (the memory cap
/// is still a typed `ResourceLimit`), but refuses deadlines rather than ignoring them.
#[test]
fn a_host_without_deadlines_refuses_them_and_keeps_the_memory_cap() {
    let wasm = midge_conformance::plugin_component();
    let host = ComponentHost::load_without_deadlines(wasm).unwrap();
    let e = ComponentEngine::open_in_memory(&host).unwrap();
    assert!(matches!(
        e.set_call_deadline(Some(Duration::from_millis(5))),
        Err(MidgeError::NotSupported(_))
    ));
    e.set_call_deadline(None).unwrap();
    let mut tx = e.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.put(b"k".to_vec(), b"v".to_vec(), None).unwrap();
    tx.commit(WriteOptions::best_effort()).unwrap();
    let tx = e.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert_eq!(tx.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(tx.get(b"missing").unwrap(), None);
    drop(tx);

    let capped = ComponentHost::load_without_deadlines(wasm)
        .unwrap()
        .with_memory_limit(24 << 20);
    overfill_is_a_resource_limit(&capped);

    let with_deadline = ComponentHost::load_without_deadlines(wasm)
        .unwrap()
        .with_call_deadline(Duration::from_secs(1));
    assert!(matches!(
        ComponentEngine::open_in_memory(&with_deadline),
        Err(MidgeError::NotSupported(_))
    ));
}

/// Puts 64 MiB into an in-memory engine on `host` (capped at 24 MiB): a typed `ResourceLimit`, not a trap.
fn overfill_is_a_resource_limit(host: &ComponentHost) {
    let engine = ComponentEngine::open_in_memory(host).unwrap();
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    let big: Vec<(Vec<u8>, Vec<u8>)> = (0..64).map(|i| (vec![i as u8; 8], vec![1u8; 1 << 20])).collect();
    let r = tx.put_many(&big);
    assert!(
        matches!(r, Err(MidgeError::ResourceLimit(_))),
        "expected ResourceLimit, got {r:?}"
    );
}
