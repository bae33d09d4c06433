//! The layering of `src/` stays what `src/lib.rs` says: its doc lists the layers bottom up, and
//! no module uses (through any `crate::…` path) a module listed after its own line, i.e. of a
//! layer above it. Also: the modules `lib.rs` declares are exactly the files and
//! folders of `src/`.
//!
//! Known upward uses are listed in [`EXCEPTIONS`], each with its reason; the test fails when one
//! is no longer needed, so the list can only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// (file, the module it uses from below its layer, why it is allowed for now).
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layers from `lib.rs`'s doc: each `//! - [`a`], [`b`]: …` line, bottom first.
fn layers() -> Vec<Vec<String>> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut out = Vec::new();
    for line in lib.lines() {
        let Some(item) = line.strip_prefix("//! - ") else {
            continue;
        };
        let head = item.split(": ").next().unwrap();
        let names: Vec<String> = head
            .split(", ")
            .filter_map(|n| n.strip_prefix("[`")?.strip_suffix("`]"))
            .map(str::to_string)
            .collect();
        assert!(!names.is_empty(), "a layer line without modules: {line}");
        out.push(names);
    }
    assert!(out.len() > 5, "no layer list found in src/lib.rs");
    out
}

/// The code of a Rust file without comments (line comments and `/* */`), strings kept.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        out.push_str(match line.find(" // ") {
            Some(i) => &line[..i],
            None => line,
        });
        out.push('\n');
    }
    out
}

/// The top-level modules a piece of code names through `crate::` paths (`crate::Error` and
/// `crate::Result` are `error`'s, re-exported at the root).
fn crate_uses(code: &str) -> BTreeSet<String> {
    fn ident(s: &str) -> &str {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    }
    fn add(out: &mut BTreeSet<String>, name: &str) {
        let name = name.trim();
        match name {
            "" | "self" => {}
            "Error" | "Result" => {
                out.insert("error".into());
            }
            n => {
                out.insert(n.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before_ok = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        rest = &rest[i + "crate::".len()..];
        if !before_ok {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b, c::{…}}`: the first name of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[j..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        add(&mut out, ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            add(&mut out, ident(rest));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module of a file below `src/` (`None` for `lib.rs` and `main.rs`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let m = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (m != "lib" && m != "main").then_some(m)
}

#[test]
fn no_module_uses_one_of_a_layer_above_it() {
    let layers = layers();
    let rank: BTreeMap<String, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (n.clone(), i)))
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for f in &files {
        let Some(module) = module_of(f) else {
            continue;
        };
        let mine = *rank
            .get(&module)
            .unwrap_or_else(|| panic!("module {module} is in no layer of src/lib.rs's doc"));
        let rel = format!("src/{}", f.strip_prefix(src()).unwrap().display());
        let code = strip_comments(&std::fs::read_to_string(f).unwrap());
        for used in crate_uses(&code) {
            if used == module {
                continue;
            }
            let Some(&theirs) = rank.get(&used) else {
                panic!("{rel} uses crate::{used}, which is in no layer of src/lib.rs's doc");
            };
            if theirs > mine {
                if EXCEPTIONS
                    .iter()
                    .any(|(ef, em, _)| *ef == rel && *em == used)
                {
                    used_exceptions.insert((rel.clone(), used.clone()));
                } else {
                    upward.push(format!(
                        "{rel} ({module}, layer {mine}) uses {used} (layer {theirs})"
                    ));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run upward between the layers of src/lib.rs:\n{}",
        upward.join("\n")
    );
    for (f, m, why) in EXCEPTIONS {
        assert!(
            used_exceptions.contains(&(f.to_string(), m.to_string())),
            "the exception {f} -> {m} ({why}) is no longer needed: remove it from EXCEPTIONS"
        );
    }
}

#[test]
fn lib_rs_declares_exactly_the_modules_of_src() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            Some(l.strip_prefix("mod ")?.trim_end_matches(';').to_string())
        })
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(src())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_string();
            if p.is_dir() {
                p.join("mod.rs").exists().then_some(name)
            } else {
                let m = name.strip_suffix(".rs")?.to_string();
                (m != "lib" && m != "main").then_some(m)
            }
        })
        .collect();
    assert_eq!(
        declared, on_disk,
        "src/lib.rs's modules and src/'s files differ"
    );
    let layered: BTreeSet<String> = layers().into_iter().flatten().collect();
    assert_eq!(
        layered, declared,
        "src/lib.rs's layer list and its modules differ"
    );
}

#[test]
fn the_use_parser_sees_grouped_and_inline_paths() {
    let code = "use crate::{error::Error, id::{BlobId, hex}, snapshot};\n\
                fn f() -> crate::Result<()> { crate::sys::uid(); Ok(()) }\n\
                let s = \"not_crate::x\";";
    let got: Vec<String> = crate_uses(code).into_iter().collect();
    assert_eq!(got, ["error", "id", "snapshot", "sys"]);
}
