use super::local::LocalFs;
use super::memory::MemoryFs;
use super::*;

fn exercise(fs: &dyn FileSystem) {
    fs.mkdir_all("a/b").unwrap();
    let f = fs.open("a/b/x", OpenMode::CreateNew).unwrap();
    f.write_at(0, b"hello").unwrap();
    f.write_at(5, b" world").unwrap();
    f.sync_data().unwrap();
    assert_eq!(f.len().unwrap(), 11);
    let mut buf = [0u8; 5];
    f.read_exact_at(6, &mut buf).unwrap();
    assert_eq!(&buf, b"world");
    assert!(f.read_exact_at(8, &mut buf).is_err(), "short read must fail");
    assert!(
        fs.open("a/b/x", OpenMode::CreateNew).is_err(),
        "CreateNew must refuse an existing file"
    );
    publish_file(fs, "a/b/y", b"published").unwrap();
    assert_eq!(
        fs.open("a/b/y", OpenMode::Read).unwrap().read_all().unwrap(),
        b"published"
    );
    assert_eq!(fs.list("a/b").unwrap(), vec!["x".to_string(), "y".to_string()]);
    fs.rename("a/b/x", "a/b/z").unwrap();
    assert!(!fs.exists("a/b/x").unwrap());
    f.set_len(2).unwrap();
    assert_eq!(
        fs.open("a/b/z", OpenMode::Read).unwrap().read_all().unwrap(),
        b"he"
    );
    fs.remove("a/b/z").unwrap();
    assert!(fs.open("a/b/z", OpenMode::Read).is_err());
    let g = fs.lock("LOCK").unwrap();
    drop(g);
    fs.sync_dir("").unwrap();
}

#[test]
fn memory_fs_behaves_like_a_file_system() {
    exercise(&MemoryFs::new());
}

#[test]
fn local_fs_behaves_like_a_file_system() {
    // std::env::temp_dir() is unsupported on WASI; the wasm runner preopens /tmp and sets TMPDIR.
    let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    let dir = tempfile::tempdir_in(tmp).unwrap();
    let fs = LocalFs::new(dir.path());
    exercise(&fs);
    assert!(
        fs.open("../escape", OpenMode::CreateNew).is_err(),
        "paths may not leave the root"
    );
}

#[test]
fn memory_lock_is_exclusive_until_dropped() {
    let fs = MemoryFs::new();
    let g = fs.lock("LOCK").unwrap();
    assert_eq!(
        fs.lock("LOCK").unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    drop(g);
    fs.lock("LOCK").unwrap();
}
