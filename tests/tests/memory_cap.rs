//! A component's engine sizes itself to the host's memory cap. Inside wasm32 it cannot see the cap, so the host
//! passes half of it down as the memory budget; with the engine's 512 MiB default a plugin capped below that
//! would grow its memtables and block cache into the cap and trap.
#![allow(clippy::disallowed_methods)]

use cntryl_midge::{TransactionMode, WriteOptions};
use midge_host::{ComponentEngine, ComponentHost};

#[test]
fn a_small_memory_cap_bounds_the_engine_instead_of_trapping_it() {
    let cap = 96usize << 20;
    let host = ComponentHost::load(midge_conformance::plugin_component())
        .unwrap()
        .with_memory_limit(cap);
    let dir = tempfile::tempdir().unwrap();
    let e = ComponentEngine::open(&host, dir.path()).unwrap();
    // ≈ 120 MB of rows: more than the cap, so the engine must flush and bound its cache to fit.
    let value = vec![0x5au8; 1000];
    for batch in 0..120u32 {
        let mut tx = e.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..1000u32)
            .map(|i| (format!("key{:08}", batch * 1000 + i).into_bytes(), value.clone()))
            .collect();
        tx.put_many(&rows).unwrap();
        tx.commit(WriteOptions::buffered())
            .unwrap_or_else(|err| panic!("batch {batch}: {err}"));
    }
    let tx = e.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    for i in (0..120_000u32).step_by(997) {
        let got = tx.get(format!("key{i:08}").as_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(&value[..]), "key {i}");
    }
}
