//! The manifest: the durable record of which column families exist, how far each has been flushed, and which
//! SST files are live at which level.
//!
//! Layout: `CURRENT` names the live `MANIFEST-<n>` file (published write temp → fsync → rename → fsync dir).
//! A manifest file is a sequence of checksummed frames (see [`crate::codec::encode_frame`]), each one [`Edit`];
//! the first edit is a full snapshot, later ones are deltas, each fsynced before it takes effect. A torn final
//! frame is an edit that never took effect. Any other damage is corruption. Owns only these files; never
//! touches SST or WAL contents.

use crate::codec::{DecodeError, FRAME_HEADER, Put, Reader, crc_matches, encode_frame};
use crate::error::{Corrupt, FileKind, MidgeError, MidgeResult};
use crate::storage::{File, OpenMode, SharedFs, publish_file};
use crate::types::{ColumnFamilyId, Seq};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub(crate) const CURRENT: &str = "CURRENT";
const EDIT_MAGIC: &[u8; 2] = b"ME";
const EDIT_VERSION: u8 = 1;
/// Roll to a fresh snapshot once the journal grows past this.
const ROLL_BYTES: u64 = 4 << 20;

/// One live SST file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub id: u64,
    pub cf: ColumnFamilyId,
    pub level: u32,
    pub size: u64,
    pub entries: u64,
    pub smallest_key: Bytes,
    pub largest_key: Bytes,
    pub smallest_seq: Seq,
    pub largest_seq: Seq,
}

/// A column family's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CfMeta {
    pub id: ColumnFamilyId,
    pub name: String,
    /// Every WAL record of this CF at or below this sequence is in published SSTs.
    pub flushed_seq: Seq,
}

/// The state a manifest describes (a fold of its edits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ManifestState {
    pub cfs: BTreeMap<ColumnFamilyId, CfMeta>,
    pub dropped: BTreeSet<ColumnFamilyId>,
    pub next_cf_id: ColumnFamilyId,
    pub next_file_id: u64,
    /// Highest sequence known to be published in SSTs (a floor for the recovered sequence).
    pub last_seq: Seq,
    pub files: BTreeMap<u64, FileMeta>,
}

/// An atomic change to the manifest state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Edit {
    pub create_cf: Vec<(ColumnFamilyId, String)>,
    pub drop_cf: Vec<ColumnFamilyId>,
    pub flushed: Vec<(ColumnFamilyId, Seq)>,
    pub add_files: Vec<FileMeta>,
    pub remove_files: Vec<u64>,
    pub next_file_id: Option<u64>,
    pub next_cf_id: Option<ColumnFamilyId>,
    pub last_seq: Option<Seq>,
}

impl ManifestState {
    /// A new database: only the `default` column family (id 0).
    pub fn initial() -> ManifestState {
        let mut s = ManifestState {
            next_cf_id: 1,
            next_file_id: 1,
            ..Default::default()
        };
        s.cfs.insert(
            0,
            CfMeta {
                id: 0,
                name: "default".into(),
                flushed_seq: 0,
            },
        );
        s
    }

    /// The whole state as one edit (the first frame of a manifest file).
    pub fn snapshot_edit(&self) -> Edit {
        Edit {
            create_cf: self.cfs.values().map(|c| (c.id, c.name.clone())).collect(),
            drop_cf: self.dropped.iter().copied().collect(),
            flushed: self.cfs.values().map(|c| (c.id, c.flushed_seq)).collect(),
            add_files: self.files.values().cloned().collect(),
            remove_files: Vec::new(),
            next_file_id: Some(self.next_file_id),
            next_cf_id: Some(self.next_cf_id),
            last_seq: Some(self.last_seq),
        }
    }

    /// Applies an edit, validating it against the current state.
    pub fn apply(&mut self, e: &Edit) -> Result<(), String> {
        for (id, name) in &e.create_cf {
            if self.cfs.contains_key(id) || self.dropped.contains(id) {
                return Err(format!("column family id {id} already used"));
            }
            self.cfs.insert(
                *id,
                CfMeta {
                    id: *id,
                    name: name.clone(),
                    flushed_seq: 0,
                },
            );
            self.next_cf_id = self.next_cf_id.max(id + 1);
        }
        for id in &e.drop_cf {
            self.cfs.remove(id);
            self.dropped.insert(*id);
            self.next_cf_id = self.next_cf_id.max(id + 1);
        }
        for (id, seq) in &e.flushed {
            if let Some(c) = self.cfs.get_mut(id) {
                c.flushed_seq = c.flushed_seq.max(*seq);
            } else if !self.dropped.contains(id) {
                return Err(format!("flush record for unknown column family {id}"));
            }
        }
        for id in &e.remove_files {
            if self.files.remove(id).is_none() {
                return Err(format!("removal of unknown file {id}"));
            }
        }
        for f in &e.add_files {
            if self.files.insert(f.id, f.clone()).is_some() {
                return Err(format!("file {} added twice", f.id));
            }
            self.next_file_id = self.next_file_id.max(f.id + 1);
        }
        if let Some(n) = e.next_file_id {
            self.next_file_id = self.next_file_id.max(n);
        }
        if let Some(n) = e.next_cf_id {
            self.next_cf_id = self.next_cf_id.max(n);
        }
        if let Some(s) = e.last_seq {
            self.last_seq = self.last_seq.max(s);
        }
        Ok(())
    }
}

impl Edit {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(EDIT_MAGIC);
        o.put_u8(EDIT_VERSION);
        o.put_u32(self.create_cf.len() as u32);
        for (id, name) in &self.create_cf {
            o.put_u32(*id);
            o.put_slice32(name.as_bytes());
        }
        o.put_u32(self.drop_cf.len() as u32);
        for id in &self.drop_cf {
            o.put_u32(*id);
        }
        o.put_u32(self.flushed.len() as u32);
        for (id, s) in &self.flushed {
            o.put_u32(*id);
            o.put_u64(*s);
        }
        o.put_u32(self.add_files.len() as u32);
        for f in &self.add_files {
            o.put_u64(f.id);
            o.put_u32(f.cf);
            o.put_u32(f.level);
            o.put_u64(f.size);
            o.put_u64(f.entries);
            o.put_slice32(&f.smallest_key);
            o.put_slice32(&f.largest_key);
            o.put_u64(f.smallest_seq);
            o.put_u64(f.largest_seq);
        }
        o.put_u32(self.remove_files.len() as u32);
        for id in &self.remove_files {
            o.put_u64(*id);
        }
        let opt64 = |o: &mut Vec<u8>, v: Option<u64>| {
            o.put_u8(u8::from(v.is_some()));
            o.put_u64(v.unwrap_or(0));
        };
        opt64(&mut o, self.next_file_id);
        opt64(&mut o, self.next_cf_id.map(u64::from));
        opt64(&mut o, self.last_seq);
        o
    }

    pub fn decode(buf: &[u8]) -> Result<Edit, DecodeError> {
        let mut r = Reader::new(buf);
        if r.take(2, "edit magic")? != EDIT_MAGIC {
            return Err(DecodeError {
                what: "bad edit magic",
                offset: 0,
            });
        }
        if r.u8("edit version")? != EDIT_VERSION {
            return Err(DecodeError {
                what: "unknown edit version",
                offset: 2,
            });
        }
        let count = |r: &mut Reader<'_>, what| -> Result<usize, DecodeError> {
            let n = r.u32(what)? as usize;
            // Each element takes at least 4 bytes: a larger count is garbage, not an allocation request.
            if n > r.remaining() / 4 {
                return Err(DecodeError {
                    what,
                    offset: r.pos(),
                });
            }
            Ok(n)
        };
        let mut e = Edit::default();
        for _ in 0..count(&mut r, "create count")? {
            let id = r.u32("cf id")?;
            let name = String::from_utf8(r.slice32("cf name")?.to_vec()).map_err(|_| DecodeError {
                what: "cf name utf8",
                offset: r.pos(),
            })?;
            e.create_cf.push((id, name));
        }
        for _ in 0..count(&mut r, "drop count")? {
            e.drop_cf.push(r.u32("cf id")?);
        }
        for _ in 0..count(&mut r, "flushed count")? {
            e.flushed.push((r.u32("cf id")?, r.u64("flushed seq")?));
        }
        for _ in 0..count(&mut r, "add count")? {
            e.add_files.push(FileMeta {
                id: r.u64("file id")?,
                cf: r.u32("file cf")?,
                level: r.u32("file level")?,
                size: r.u64("file size")?,
                entries: r.u64("file entries")?,
                smallest_key: r.bytes32("smallest key")?,
                largest_key: r.bytes32("largest key")?,
                smallest_seq: r.u64("smallest seq")?,
                largest_seq: r.u64("largest seq")?,
            });
        }
        for _ in 0..count(&mut r, "remove count")? {
            e.remove_files.push(r.u64("file id")?);
        }
        let mut opt = |what| -> Result<Option<u64>, DecodeError> {
            let flag = r.u8(what)?;
            let v = r.u64(what)?;
            match flag {
                0 => Ok(None),
                1 => Ok(Some(v)),
                _ => Err(DecodeError { what, offset: 0 }),
            }
        };
        e.next_file_id = opt("next file id")?;
        e.next_cf_id = opt("next cf id")?.map(|v| v as u32);
        e.last_seq = opt("last seq")?;
        if !r.is_empty() {
            return Err(DecodeError {
                what: "trailing bytes",
                offset: r.pos(),
            });
        }
        Ok(e)
    }
}

fn manifest_name(n: u64) -> String {
    format!("MANIFEST-{n:06}")
}

fn parse_manifest_name(s: &str) -> Option<u64> {
    let d = s.strip_prefix("MANIFEST-")?;
    if d.len() == 6 && d.bytes().all(|b| b.is_ascii_digit()) {
        d.parse().ok()
    } else {
        None
    }
}

/// What loading the manifest found.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub state: ManifestState,
    pub number: u64,
    pub edits: u64,
    pub torn_tail: bool,
}

/// Reads `CURRENT` and the manifest it names. Never mutates anything.
pub(crate) fn load(fs: &SharedFs) -> MidgeResult<Loaded> {
    let io = |ctx: &str, e| MidgeError::from_io(ctx, e);
    let cur = fs
        .open(CURRENT, OpenMode::Read)
        .map_err(|e| io("read CURRENT", e))?;
    let text = cur.read_all().map_err(|e| io("read CURRENT", e))?;
    let name = std::str::from_utf8(&text)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .unwrap_or("");
    let number = parse_manifest_name(name).ok_or_else(|| {
        Corrupt::new(
            FileKind::Manifest,
            CURRENT,
            0,
            "MANIFEST-<6 digits>\\n",
            format!("{text:?}"),
        )
    })?;
    let f = fs.open(name, OpenMode::Read).map_err(|e| io(name, e))?;
    let data = f.read_all().map_err(|e| io(name, e))?;
    let mut state = ManifestState::default();
    let mut pos = 0usize;
    let mut edits = 0u64;
    let mut torn_tail = false;
    while pos < data.len() {
        let mut r = Reader::new(&data[pos..]);
        let parsed = (|| {
            let len = r.u32("frame len").ok()? as usize;
            let crc = r.u32("frame crc").ok()?;
            let payload = r.take(len, "payload").ok()?;
            crc_matches(crc, payload).then_some(payload)
        })();
        let Some(payload) = parsed else {
            // Only the final frame can be torn: nothing may follow it.
            let hdr_len = data
                .get(pos..pos + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64);
            let frame_end = hdr_len.map(|l| pos as u64 + FRAME_HEADER as u64 + l);
            if frame_end.is_none_or(|end| end >= data.len() as u64) || data[pos..].iter().all(|b| *b == 0) {
                torn_tail = true;
                break;
            }
            return Err(Corrupt::new(
                FileKind::Manifest,
                name,
                pos as u64,
                "a valid edit frame",
                "bad checksum",
            )
            .into());
        };
        let edit = Edit::decode(payload).map_err(|e| {
            MidgeError::from(Corrupt::new(
                FileKind::Manifest,
                name,
                pos as u64,
                "a valid edit",
                e.to_string(),
            ))
        })?;
        state.apply(&edit).map_err(|e| {
            MidgeError::from(Corrupt::new(
                FileKind::Manifest,
                name,
                pos as u64,
                "a consistent edit",
                e,
            ))
        })?;
        edits += 1;
        pos += FRAME_HEADER + payload.len();
    }
    if edits == 0 {
        return Err(Corrupt::new(
            FileKind::Manifest,
            name,
            0,
            "a snapshot edit",
            "an empty manifest",
        )
        .into());
    }
    Ok(Loaded {
        state,
        number,
        edits,
        torn_tail,
    })
}

/// The open manifest: appends edits durably and rolls to fresh snapshots.
#[derive(Debug)]
pub(crate) struct Manifest {
    fs: SharedFs,
    file: Arc<dyn File>,
    number: u64,
    len: u64,
    state: ManifestState,
}

impl Manifest {
    /// Writes `MANIFEST-<number>` holding `state` as one snapshot, then publishes `CURRENT` to name it and
    /// removes the manifest it replaces (`previous`).
    pub fn create(
        fs: SharedFs,
        number: u64,
        state: ManifestState,
        previous: Option<u64>,
    ) -> MidgeResult<Manifest> {
        let io = |ctx: &str, e| MidgeError::from_io(ctx, e);
        let name = manifest_name(number);
        let file = fs
            .open(&name, OpenMode::CreateTruncate)
            .map_err(|e| io(&name, e))?;
        let frame = encode_frame(&state.snapshot_edit().encode());
        file.write_at(0, &frame).map_err(|e| io(&name, e))?;
        if !cfg!(feature = "canary-rename-before-fsync") {
            file.sync_all().map_err(|e| io(&name, e))?;
        }
        publish_file(fs.as_ref(), CURRENT, format!("{name}\n").as_bytes())
            .map_err(|e| io("publish CURRENT", e))?;
        if let Some(p) = previous.filter(|p| *p != number) {
            // Best effort: a leftover old manifest is ignored (CURRENT is the authority) and removed next time.
            let _ = fs.remove(&manifest_name(p));
        }
        Ok(Manifest {
            fs,
            file,
            number,
            len: frame.len() as u64,
            state,
        })
    }

    pub fn state(&self) -> &ManifestState {
        &self.state
    }

    /// The whole state as one manifest file image (a single snapshot frame), for mirroring.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        encode_frame(&self.state.snapshot_edit().encode())
    }

    /// Makes `edit` durable, then applies it. On error nothing was applied in memory; an fsync error means the
    /// caller must poison the engine (the edit may or may not be on disk).
    pub fn apply(&mut self, edit: Edit) -> MidgeResult<()> {
        let mut next = self.state.clone();
        next.apply(&edit).map_err(MidgeError::Internal)?;
        let frame = encode_frame(&edit.encode());
        let name = manifest_name(self.number);
        self.file
            .write_at(self.len, &frame)
            .map_err(|e| MidgeError::from_io(&name, e))?;
        self.file
            .sync_data()
            .map_err(|e| MidgeError::Poisoned(format!("manifest fsync failed: {e}")))?;
        self.len += frame.len() as u64;
        self.state = next;
        if self.len > ROLL_BYTES {
            let fresh = Manifest::create(
                self.fs.clone(),
                self.number + 1,
                self.state.clone(),
                Some(self.number),
            )?;
            *self = fresh;
        }
        Ok(())
    }

    /// Allocates a file id. It becomes durable with the edit that adds the file; an id reserved by a
    /// publication that never happened names an orphan, which open removes before allocating again.
    pub fn reserve_file_id(&mut self) -> u64 {
        let id = self.state.next_file_id;
        self.state.next_file_id += 1;
        id
    }

    pub fn number(&self) -> u64 {
        self.number
    }
}

/// Removes manifest files other than `keep` (leftovers from an interrupted roll).
pub(crate) fn remove_stale(fs: &SharedFs, keep: u64) -> MidgeResult<()> {
    let names = fs.list("").map_err(|e| MidgeError::from_io("list db dir", e))?;
    for n in names {
        if parse_manifest_name(&n).is_some_and(|x| x != keep) {
            let _ = fs.remove(&n);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryFs;

    fn fm(id: u64) -> FileMeta {
        FileMeta {
            id,
            cf: 0,
            level: 0,
            size: 10,
            entries: 1,
            smallest_key: Bytes::from_static(b"a"),
            largest_key: Bytes::from_static(b"z"),
            smallest_seq: 1,
            largest_seq: 2,
        }
    }

    #[test]
    fn edits_survive_reload_and_roll() {
        let fs: SharedFs = Arc::new(MemoryFs::new());
        let mut m = Manifest::create(fs.clone(), 1, ManifestState::initial(), None).unwrap();
        m.apply(Edit {
            create_cf: vec![(1, "users".into())],
            ..Default::default()
        })
        .unwrap();
        m.apply(Edit {
            add_files: vec![fm(7)],
            flushed: vec![(1, 40)],
            ..Default::default()
        })
        .unwrap();
        m.apply(Edit {
            drop_cf: vec![1],
            ..Default::default()
        })
        .unwrap();
        let l = load(&fs).unwrap();
        assert_eq!(&l.state, m.state());
        assert_eq!(l.edits, 4);
        assert!(l.state.dropped.contains(&1));
        assert_eq!(l.state.next_file_id, 8);
        let m2 = Manifest::create(fs.clone(), 2, l.state.clone(), Some(1)).unwrap();
        assert_eq!(load(&fs).unwrap().state, *m2.state());
        assert!(!fs.exists("MANIFEST-000001").unwrap());
    }

    #[test]
    fn a_torn_final_edit_is_ignored_and_mid_file_damage_is_corruption() {
        let fs: SharedFs = Arc::new(MemoryFs::new());
        let mut m = Manifest::create(fs.clone(), 1, ManifestState::initial(), None).unwrap();
        m.apply(Edit {
            create_cf: vec![(1, "a".into())],
            ..Default::default()
        })
        .unwrap();
        m.apply(Edit {
            create_cf: vec![(2, "b".into())],
            ..Default::default()
        })
        .unwrap();
        let f = fs.open("MANIFEST-000001", OpenMode::ReadWrite).unwrap();
        let data = f.read_all().unwrap();
        f.set_len(data.len() as u64 - 2).unwrap();
        let l = load(&fs).unwrap();
        assert!(l.torn_tail);
        assert!(l.state.cfs.contains_key(&1) && !l.state.cfs.contains_key(&2));
        let mut bad = data.clone();
        bad[12] ^= 1;
        f.write_at(0, &bad).unwrap();
        assert!(matches!(load(&fs), Err(MidgeError::Corruption(_))));
        f.write_at(0, b"garbage!").unwrap();
        assert!(load(&fs).is_err());
    }

    #[test]
    fn inconsistent_edits_are_rejected() {
        let mut s = ManifestState::initial();
        assert!(
            s.apply(&Edit {
                create_cf: vec![(0, "x".into())],
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            s.apply(&Edit {
                remove_files: vec![3],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn edit_decoding_never_panics_on_garbage() {
        let e = Edit {
            add_files: vec![fm(1), fm(2)],
            create_cf: vec![(3, "c".into())],
            ..Default::default()
        };
        let enc = e.encode();
        assert_eq!(Edit::decode(&enc).unwrap(), e);
        for i in 0..enc.len() {
            let _ = Edit::decode(&enc[..i]);
            let mut m = enc.clone();
            m[i] = m[i].wrapping_add(0x55);
            let _ = Edit::decode(&m);
        }
    }
}
