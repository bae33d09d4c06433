//! Names a file system cannot keep apart.
//!
//! A case-insensitive file system (macOS by default, Windows, many SMB and exFAT mounts) opens
//! `Data` when asked for `data`; a normalizing one (HFS+, APFS in practice) opens the NFD
//! spelling `e\u{301}` when asked for the NFC `\u{e9}`. A tree from a plain Linux folder can hold
//! both spellings, one of them possibly a symlink: written out naively, the second lands on — or
//! through — the first. [`probe`] finds out what a directory's file system folds, [`key`] gives
//! the name it really addresses, and [`apart_name`] a name to keep a colliding entry under.

use std::collections::HashSet;
use std::io;

use unicode_normalization::UnicodeNormalization;

use super::{Dir, temp_name};

/// What a file system treats as the same name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folding {
    /// `A` and `a` are one name.
    pub case: bool,
    /// NFC and NFD spellings are one name.
    pub unicode: bool,
}

impl Folding {
    pub fn any(self) -> bool {
        self.case || self.unicode
    }
}

/// Finds out, by trying, what the file system of `dir` folds: creates a probe file with a
/// mixed-case NFC name (matching `*.prism-tmp-*`, so no scan ever sees it), looks it up under
/// the other spellings, and removes it.
pub fn probe(dir: &Dir) -> io::Result<Folding> {
    let base = temp_name(b"prism-probe");
    let mut name = base.clone();
    name.extend_from_slice("-Xy\u{e9}".as_bytes());
    let nf = dir.new_file(&name)?;
    nf.commit(&name)?;
    let r = (|| -> io::Result<Folding> {
        let created = dir
            .entry(&name)?
            .ok_or_else(|| io::Error::other("probe vanished"))?;
        let same = |other: &str| -> io::Result<bool> {
            let mut n = base.clone();
            n.extend_from_slice(other.as_bytes());
            Ok(dir
                .entry(&n)?
                .is_some_and(|e| (e.dev, e.ino) == (created.dev, created.ino)))
        };
        Ok(Folding {
            case: same("-xY\u{e9}")?,
            unicode: same("-Xye\u{301}")?,
        })
    })();
    let _ = dir.remove_file(&name);
    r
}

/// The name as the file system addresses it: the same key means the same entry there. Names
/// that are not UTF-8 are taken as they are.
pub fn key(name: &[u8], f: Folding) -> Vec<u8> {
    if !f.any() {
        return name.to_vec();
    }
    let Ok(s) = std::str::from_utf8(name) else {
        return name.to_vec();
    };
    let s: String = if f.unicode {
        s.nfd().collect()
    } else {
        s.into()
    };
    let s = if f.case { s.to_lowercase() } else { s };
    let s: String = if f.unicode { s.nfc().collect() } else { s };
    s.into_bytes()
}

/// Of `names` (one directory's entries, in the tree's order), the indexes of those that collide
/// with an earlier one on a file system folding `f`. The first of each group keeps its name.
pub fn colliding(names: &[&[u8]], f: Folding) -> Vec<usize> {
    if !f.any() {
        return Vec::new();
    }
    let mut seen = HashSet::new();
    names
        .iter()
        .enumerate()
        .filter(|(_, n)| !seen.insert(key(n, f)))
        .map(|(i, _)| i)
        .collect()
}

/// A name to keep `name` apart under: `<stem>.name-conflict-<n><.ext>`, the first `n` whose key
/// is not in `taken` (the keys of every name in the directory). The chosen key is added.
pub fn apart_name(name: &[u8], taken: &mut HashSet<Vec<u8>>, f: Folding) -> Vec<u8> {
    // The extension stays last so the file still opens in the right program.
    let dot = name
        .iter()
        .rposition(|&b| b == b'.')
        .filter(|&i| i > 0 && name.len() - i <= 16);
    let (stem, ext) = match dot {
        Some(i) => name.split_at(i),
        None => (name, &b""[..]),
    };
    let stem = &stem[..stem.len().min(200)];
    for n in 1u32.. {
        let mut cand = stem.to_vec();
        cand.extend_from_slice(format!(".name-conflict-{n}").as_bytes());
        cand.extend_from_slice(ext);
        if taken.insert(key(&cand, f)) {
            return cand;
        }
    }
    unreachable!("some counter value is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Folding = Folding {
        case: true,
        unicode: true,
    };

    #[test]
    fn keys_fold_case_and_normalization_only_when_asked() {
        assert_eq!(key(b"Data", Folding::default()), b"Data");
        assert_eq!(
            key(
                b"Data",
                Folding {
                    case: true,
                    unicode: false
                }
            ),
            b"data"
        );
        let nfc = "caf\u{e9}".as_bytes();
        let nfd = "cafe\u{301}".as_bytes();
        assert_ne!(key(nfc, Folding::default()), key(nfd, Folding::default()));
        assert_eq!(key(nfc, BOTH), key(nfd, BOTH));
        assert_eq!(key("CAF\u{c9}".as_bytes(), BOTH), key(nfd, BOTH));
        assert_eq!(key(b"\xff\xfeA", BOTH), b"\xff\xfeA");
    }

    #[test]
    fn the_first_of_a_group_keeps_its_name() {
        let names: Vec<&[u8]> = vec![b"A", b"b", b"a", "\u{e9}".as_bytes(), "e\u{301}".as_bytes()];
        assert_eq!(colliding(&names, BOTH), vec![2, 4]);
        assert!(colliding(&names, Folding::default()).is_empty());
    }

    #[test]
    fn apart_names_keep_the_extension_and_avoid_every_taken_key() {
        let mut taken: HashSet<Vec<u8>> = [b"notes.txt".as_ref(), b"notes.name-conflict-1.TXT"]
            .iter()
            .map(|n| key(n, BOTH))
            .collect();
        assert_eq!(
            apart_name(b"Notes.txt", &mut taken, BOTH),
            b"Notes.name-conflict-2.txt"
        );
        assert_eq!(apart_name(b"a", &mut taken, BOTH), b"a.name-conflict-1");
        assert_eq!(
            apart_name(b".bashrc", &mut taken, BOTH),
            b".bashrc.name-conflict-1"
        );
    }

    #[test]
    fn probe_finds_an_ordinary_linux_directory_folds_nothing() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        assert_eq!(probe(&d).unwrap(), Folding::default());
        assert!(d.names().unwrap().is_empty(), "the probe cleans up");
    }
}
