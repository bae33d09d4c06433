//! The seeded random workload: file-system operations on one endpoint's folder, as a user and
//! their programs make them, each recorded as an [`Event`] for the oracle. An operation first
//! observes what it is about to replace, then acts; content is unique per operation (a header
//! names the seed and the operation), so every state can be traced back to the write that made
//! it.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fsview::{Item, Want, observe, pick};
use super::oracle::Event;
use super::rng::Rng;

/// Top-level names the workload never deletes, moves or retypes (their files are edited): the
/// folder never empties by chance, and the hot files are where concurrent edits meet.
pub const PROTECTED: &[&str] = &["keep", "hot"];
/// Files every endpoint edits at the same moment in [`Op::SameFileEdit`].
pub const HOT_FILES: u64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Rewrite,
    Append,
    SlowAppend,
    Delete,
    RenameFile,
    RenameDir,
    MakeTree,
    DeleteTree,
    FileToDir,
    FileToLink,
    DirToFile,
    DirToLink,
    LinkToFile,
    MakeLink,
    Burst,
    BigFile,
    /// The same hot file edited on two endpoints at the same moment.
    SameFileEdit,
    /// Two random operations on two endpoints at the same moment.
    Concurrent,
    /// The workload rests (the daemons catch up).
    Pause,
    /// `prism-sync pause` on one endpoint, resumed a few seconds later.
    PauseDaemon,
    /// SIGKILL one endpoint's daemon (mid-step, likely), restarted a few seconds later.
    KillDaemon,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Rewrite => "rewrite",
            Op::Append => "append",
            Op::SlowAppend => "slow-append",
            Op::Delete => "delete",
            Op::RenameFile => "rename-file",
            Op::RenameDir => "rename-dir",
            Op::MakeTree => "make-tree",
            Op::DeleteTree => "delete-tree",
            Op::FileToDir => "file-to-dir",
            Op::FileToLink => "file-to-link",
            Op::DirToFile => "dir-to-file",
            Op::DirToLink => "dir-to-link",
            Op::LinkToFile => "link-to-file",
            Op::MakeLink => "make-link",
            Op::Burst => "burst",
            Op::BigFile => "big-file",
            Op::SameFileEdit => "same-file-edit",
            Op::Concurrent => "concurrent",
            Op::Pause => "pause",
            Op::PauseDaemon => "pause-daemon",
            Op::KillDaemon => "kill-daemon",
        }
    }

    pub const ALL: &[Op] = &[
        Op::Create,
        Op::Rewrite,
        Op::Append,
        Op::SlowAppend,
        Op::Delete,
        Op::RenameFile,
        Op::RenameDir,
        Op::MakeTree,
        Op::DeleteTree,
        Op::FileToDir,
        Op::FileToLink,
        Op::DirToFile,
        Op::DirToLink,
        Op::LinkToFile,
        Op::MakeLink,
        Op::Burst,
        Op::BigFile,
        Op::SameFileEdit,
        Op::Concurrent,
        Op::Pause,
        Op::PauseDaemon,
        Op::KillDaemon,
    ];

    /// Operations a thread of [`Op::Concurrent`] may run.
    pub const SIMPLE: &[Op] = &[
        Op::Create,
        Op::Rewrite,
        Op::Append,
        Op::Delete,
        Op::RenameFile,
        Op::RenameDir,
        Op::MakeTree,
        Op::DeleteTree,
        Op::FileToDir,
        Op::FileToLink,
        Op::DirToFile,
        Op::LinkToFile,
        Op::MakeLink,
    ];
}

/// How much of what: operation weights and sizes.
#[derive(Debug, Clone)]
pub struct Profile {
    pub weights: Vec<(Op, u32)>,
    /// Files in a burst (min, max).
    pub burst_files: (u64, u64),
    /// Size of a big file in bytes (min, max).
    pub big_bytes: (u64, u64),
    /// Rest between operations, chosen in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Length of a pause (min, max) in ms.
    pub pause_ms: (u64, u64),
    /// How long a paused or killed daemon stays so (min, max) in ms.
    pub daemon_down_ms: (u64, u64),
}

impl Profile {
    /// Everything, daemon kills and pauses included.
    pub fn full() -> Profile {
        Profile {
            weights: vec![
                (Op::Create, 12),
                (Op::Rewrite, 12),
                (Op::Append, 7),
                (Op::SlowAppend, 2),
                (Op::Delete, 6),
                (Op::RenameFile, 6),
                (Op::RenameDir, 3),
                (Op::MakeTree, 4),
                (Op::DeleteTree, 2),
                (Op::FileToDir, 1),
                (Op::FileToLink, 1),
                (Op::DirToFile, 1),
                (Op::DirToLink, 1),
                (Op::LinkToFile, 1),
                (Op::MakeLink, 2),
                (Op::Burst, 1),
                (Op::BigFile, 2),
                (Op::SameFileEdit, 6),
                (Op::Concurrent, 6),
                (Op::Pause, 3),
                (Op::PauseDaemon, 1),
                (Op::KillDaemon, 1),
            ],
            burst_files: (80, 300),
            big_bytes: (256 << 10, 4 << 20),
            jitter_ms: 60,
            pause_ms: (300, 3000),
            daemon_down_ms: (500, 5000),
        }
    }

    pub fn without(mut self, ops: &[Op]) -> Profile {
        self.weights.retain(|(o, _)| !ops.contains(o));
        self
    }

    pub fn choose(&self, rng: &mut Rng) -> Op {
        let w: Vec<u32> = self.weights.iter().map(|(_, w)| *w).collect();
        self.weights[rng.weighted(&w)].0
    }
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Unique content for operation `seq`: a header naming it, then text or random bytes.
pub fn content(seed: u64, seq: u64, tag: &str, len: usize, binary: bool) -> Vec<u8> {
    let mut out = format!("prism multi-daemon test: seed {seed} op {seq} {tag}\n").into_bytes();
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes())
        .update(&seq.to_le_bytes())
        .update(tag.as_bytes());
    let mut raw = vec![0u8; len.saturating_sub(out.len())];
    h.finalize_xof().fill(&mut raw);
    if !binary {
        const WORDS: [&str; 8] = [
            "alpha ", "beta ", "gamma ", "delta ", "sample ", "0.125 ", "result ", "\n",
        ];
        let mut text = Vec::with_capacity(raw.len() + 8);
        for b in &raw {
            if text.len() >= raw.len() {
                break;
            }
            text.extend_from_slice(WORDS[(*b % 8) as usize].as_bytes());
        }
        text.truncate(raw.len());
        raw = text;
    }
    out.extend_from_slice(&raw);
    out
}

fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn name_of(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(_, n)| n).unwrap_or(rel)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// `name` with `-tag` inserted before its extension.
fn renamed(name: &str, tag: &str) -> String {
    match name.rfind('.').filter(|&i| i > 0) {
        Some(i) => format!("{}-{tag}{}", &name[..i], &name[i..]),
        None => format!("{name}-{tag}"),
    }
}

/// Refuses a path one of whose directories is not a directory (a daemon replaced it by a
/// symlink or a file since the path was picked): acting on it would follow a symlink, and the
/// oracle would record a write where none happened.
fn direct(root: &Path, rel: &str) -> std::io::Result<()> {
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(md) if !md.is_dir() => {
                return Err(std::io::Error::other(format!(
                    "{} is no longer a directory",
                    at.display()
                )));
            }
            Ok(_) => {}
            Err(_) => return Ok(()), // created below
        }
    }
    Ok(())
}

/// Appends `more` to the file at `rel` (creating it with `create`), reading what it held
/// through the same open file: if a daemon renames the file away meanwhile (a kept conflict
/// copy), the record still names the content that file got. Returns the content before and
/// after.
fn append_file(root: &Path, rel: &str, more: &[u8], create: bool) -> std::io::Result<(Item, Item)> {
    use std::io::Read as _;
    direct(root, rel)?;
    let p = root.join(rel);
    if create && let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .open(&p)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut all = Vec::new();
    f.read_to_end(&mut all)?;
    let before = Item::file(&all);
    f.write_all(more)?;
    all.extend_from_slice(more);
    Ok((before, Item::file(&all)))
}

/// Writes `data` at `rel` in place (open with truncate, one write), as most programs do. Returns
/// the item and how long the truncated state lasted (µs).
fn write_in_place(root: &Path, rel: &str, data: &[u8]) -> std::io::Result<(Item, u64)> {
    direct(root, rel)?;
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    // The transient (empty) state starts inside `open` and ends when the write returns; the
    // writer can be descheduled between the two, so both are inside the measured span.
    let t = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)?;
    f.write_all(data)?;
    Ok((Item::file(data), t.elapsed().as_micros() as u64))
}

/// A symlink target: a sibling, something above, or nothing at all.
fn link_target(rng: &mut Rng, seq: u64, root: &Path, dir: &str) -> String {
    match rng.below(3) {
        0 => {
            let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
                .first()
                .cloned()
                .unwrap_or_else(|| format!("missing-{seq}"))
        }
        1 => format!("../elsewhere-{seq}"),
        _ => format!("missing-{seq}"),
    }
}

/// A picked path, or the error that makes [`execute`] return `None`.
fn found(p: Option<String>) -> std::io::Result<String> {
    p.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "nothing to act on"))
}

/// The parameters of one operation on one endpoint.
pub struct Ctx<'a> {
    pub root: &'a Path,
    pub endpoint: usize,
    pub seq: u64,
    pub seed: u64,
    pub profile: &'a Profile,
}

impl Ctx<'_> {
    fn event(&self, op: Op) -> Event {
        Event {
            seq: self.seq,
            endpoint: self.endpoint,
            op: op.name(),
            start_ns: now_ns(),
            ..Default::default()
        }
    }

    fn text(&self, tag: &str, rng: &mut Rng) -> Vec<u8> {
        let len = if rng.chance(0.1) {
            rng.range(8_000, 64_000)
        } else {
            rng.range(20, 4_000)
        };
        content(self.seed, self.seq, tag, len as usize, false)
    }

    /// A random existing directory, or the root.
    fn some_dir(&self, rng: &mut Rng) -> String {
        if rng.chance(0.25) {
            return String::new();
        }
        pick(rng, self.root, Want::Dir, &[]).unwrap_or_default()
    }
}

/// Runs one file-system operation; `None` if it found nothing to act on. Errors (a path that a
/// daemon changed under the workload's feet) are recorded in the event's note.
pub fn execute(op: Op, cx: &Ctx, rng: &mut Rng) -> Option<Vec<Event>> {
    let mut e = cx.event(op);
    let root = cx.root;
    let r: std::io::Result<()> = (|| {
        match op {
            Op::Create => {
                let dir = cx.some_dir(rng);
                let ext = *rng.pick(&[".txt", ".csv", ".py", ".md", ""]);
                let rel = join(&dir, &format!("f{}{ext}", cx.seq));
                let data = cx.text("create", rng);
                e.touched.push(rel.clone());
                let (item, us) = write_in_place(root, &rel, &data)?;
                e.transient.push((rel.clone(), Item::file(b""), us));
                e.written.push((rel, item));
            }
            Op::Rewrite | Op::Append | Op::BigFile => {
                let rel = match op {
                    Op::BigFile if rng.chance(0.5) => {
                        join(&cx.some_dir(rng), &format!("big{}.bin", cx.seq))
                    }
                    _ => found(pick(rng, root, Want::File, &[]))?,
                };
                direct(root, &rel)?;
                e.touched.push(rel.clone());
                if op == Op::Append {
                    let more = content(
                        cx.seed,
                        cx.seq,
                        "append",
                        rng.range(10, 3000) as usize,
                        false,
                    );
                    let (before, after) = append_file(root, &rel, &more, false)?;
                    e.observed = vec![(rel.clone(), before)];
                    e.written.push((rel, after));
                } else {
                    e.observed = observe(root, &rel);
                    let data = if op == Op::BigFile {
                        let (lo, hi) = cx.profile.big_bytes;
                        content(cx.seed, cx.seq, "big", rng.range(lo, hi) as usize, true)
                    } else {
                        cx.text("rewrite", rng)
                    };
                    let (item, us) = write_in_place(root, &rel, &data)?;
                    e.transient.push((rel.clone(), Item::file(b""), us));
                    e.written.push((rel, item));
                }
            }
            Op::Delete => {
                let want = if rng.chance(0.8) {
                    Want::File
                } else {
                    Want::Link
                };
                let rel = found(
                    pick(rng, root, want, PROTECTED)
                        .or_else(|| pick(rng, root, Want::File, PROTECTED)),
                )?;
                e.touched.push(rel.clone());
                e.observed = observe(root, &rel);
                std::fs::remove_file(root.join(&rel))?;
            }
            Op::RenameFile => {
                let rel = found(pick(rng, root, Want::File, PROTECTED))?;
                direct(root, &rel)?;
                let dir = if rng.chance(0.6) {
                    parent(&rel).to_string()
                } else {
                    cx.some_dir(rng)
                };
                let to = join(&dir, &renamed(name_of(&rel), &format!("r{}", cx.seq)));
                direct(root, &to)?;
                e.touched.push(rel.clone());
                e.observed = observe(root, &rel);
                std::fs::rename(root.join(&rel), root.join(&to))?;
                e.written = e
                    .observed
                    .iter()
                    .map(|(_, i)| (to.clone(), i.clone()))
                    .collect();
                e.moves = true;
                e.moved_to = Some(to.clone());
            }
            Op::RenameDir => {
                let rel = found(pick(rng, root, Want::Dir, PROTECTED))?;
                direct(root, &rel)?;
                let dir = if rng.chance(0.7) {
                    parent(&rel).to_string()
                } else {
                    cx.some_dir(rng)
                };
                if dir == rel || super::fsview::is_ancestor(&rel, &dir) {
                    return Err(std::io::Error::other("would move a directory into itself"));
                }
                let to = join(&dir, &format!("{}-m{}", name_of(&rel), cx.seq));
                direct(root, &to)?;
                e.touched.push(rel.clone());
                e.observed = observe(root, &rel);
                std::fs::rename(root.join(&rel), root.join(&to))?;
                e.written = observe(root, &to);
                e.moves = true;
                e.moved_to = Some(to.clone());
            }
            Op::MakeTree => {
                let base = join(&cx.some_dir(rng), &format!("t{}", cx.seq));
                direct(root, &base)?;
                let mut dirs = vec![base.clone()];
                for k in 0..rng.below(3) {
                    let d = join(rng.pick(&dirs).clone().as_str(), &format!("s{k}"));
                    dirs.push(d);
                }
                for d in &dirs {
                    std::fs::create_dir_all(root.join(d))?;
                }
                for k in 0..rng.range(1, 6) {
                    let rel = join(rng.pick(&dirs).as_str(), &format!("n{k}.txt"));
                    let data = content(
                        cx.seed,
                        cx.seq,
                        &format!("tree {k}"),
                        rng.range(10, 2000) as usize,
                        false,
                    );
                    let (item, us) = write_in_place(root, &rel, &data)?;
                    e.transient.push((rel.clone(), Item::file(b""), us));
                    e.written.push((rel, item));
                }
                e.touched.push(base);
            }
            Op::DeleteTree => {
                let rel = found(pick(rng, root, Want::Dir, PROTECTED))?;
                direct(root, &rel)?;
                e.touched.push(rel.clone());
                e.observed = observe(root, &rel);
                let mut tries = 0;
                while let Err(err) = std::fs::remove_dir_all(root.join(&rel)) {
                    tries += 1;
                    if err.kind() == std::io::ErrorKind::NotFound || tries >= 5 {
                        e.note = format!("remove_dir_all: {err} after {tries} tries");
                        break;
                    }
                }
                // Whatever a daemon put back meanwhile is still there: not destroyed.
                let left = observe(root, &rel);
                e.observed.retain(|o| !left.contains(o));
            }
            Op::FileToDir | Op::FileToLink => {
                let rel = found(pick(rng, root, Want::File, PROTECTED))?;
                direct(root, &rel)?;
                e.touched.push(rel.clone());
                e.observed = observe(root, &rel);
                std::fs::remove_file(root.join(&rel))?;
                if op == Op::FileToDir {
                    std::fs::create_dir(root.join(&rel))?;
                    let inner = join(&rel, &format!("inner{}.txt", cx.seq));
                    let (item, us) = write_in_place(root, &inner, &cx.text("file-to-dir", rng))?;
                    e.transient.push((inner.clone(), Item::file(b""), us));
                    e.written.push((inner, item));
                } else {
                    let t = link_target(rng, cx.seq, root, parent(&rel));
                    std::os::unix::fs::symlink(&t, root.join(&rel))?;
                    e.written.push((rel, Item::Link(t)));
                }
            }
            Op::DirToFile | Op::DirToLink => {
                let rel = found(pick(rng, root, Want::Dir, PROTECTED))?;
                direct(root, &rel)?;
                e.touched.push(rel.clone());
                e.observed = observe(root, &rel);
                std::fs::remove_dir_all(root.join(&rel))?;
                if op == Op::DirToFile {
                    let (item, us) = write_in_place(root, &rel, &cx.text("dir-to-file", rng))?;
                    e.transient.push((rel.clone(), Item::file(b""), us));
                    e.written.push((rel, item));
                } else {
                    let t = link_target(rng, cx.seq, root, parent(&rel));
                    std::os::unix::fs::symlink(&t, root.join(&rel))?;
                    e.written.push((rel, Item::Link(t)));
                }
            }
            Op::LinkToFile => {
                let rel = found(pick(rng, root, Want::Link, PROTECTED))?;
                direct(root, &rel)?;
                e.touched.push(rel.clone());
                e.observed = observe(root, &rel);
                std::fs::remove_file(root.join(&rel))?;
                let (item, us) = write_in_place(root, &rel, &cx.text("link-to-file", rng))?;
                e.transient.push((rel.clone(), Item::file(b""), us));
                e.written.push((rel, item));
            }
            Op::MakeLink => {
                let dir = cx.some_dir(rng);
                let rel = join(&dir, &format!("l{}", cx.seq));
                direct(root, &rel)?;
                let t = link_target(rng, cx.seq, root, &dir);
                e.touched.push(rel.clone());
                std::os::unix::fs::symlink(&t, root.join(&rel))?;
                e.written.push((rel, Item::Link(t)));
            }
            Op::Burst => {
                let base = format!("burst{}", cx.seq);
                let (lo, hi) = cx.profile.burst_files;
                let n = rng.range(lo, hi);
                for k in 0..n {
                    let rel = format!("{base}/{}/b{k}.txt", k % 10);
                    let data = content(
                        cx.seed,
                        cx.seq,
                        &format!("burst {k}"),
                        rng.range(10, 600) as usize,
                        false,
                    );
                    let (item, us) = write_in_place(root, &rel, &data)?;
                    e.transient.push((rel.clone(), Item::file(b""), us));
                    e.written.push((rel, item));
                }
                e.touched.push(base);
            }
            Op::SlowAppend
            | Op::SameFileEdit
            | Op::Concurrent
            | Op::Pause
            | Op::PauseDaemon
            | Op::KillDaemon => {
                unreachable!("{op:?} is run by the harness")
            }
        }
        Ok(())
    })();
    if let Err(err) = r {
        if e.touched.is_empty() {
            return None; // nothing found to act on
        }
        e.note = format!("failed: {err}");
        // What the operation did before it failed stays recorded; what it could not reach was
        // not destroyed by it.
        let now: Vec<(String, Item)> = e.touched.iter().flat_map(|t| observe(root, t)).collect();
        e.observed.retain(|o| !now.contains(o));
    }
    e.end_ns = now_ns();
    Some(vec![e])
}

/// Appends of one [`slow_append`] at most; each gets its own sequence number (`cx.seq + k`).
pub const SLOW_APPENDS_MAX: u64 = 8;

/// A file grown by several appends with pauses between them (a program logging): each append
/// is its own event, and each state between appends is a real one that may be published.
pub fn slow_append(cx: &Ctx, rng: &mut Rng) -> Option<Vec<Event>> {
    let rel = if rng.chance(0.5) {
        pick(rng, cx.root, Want::File, &[])?
    } else {
        join(&cx.some_dir(rng), &format!("log{}.txt", cx.seq))
    };
    let mut events = Vec::new();
    for k in 0..rng.range(3, SLOW_APPENDS_MAX) {
        if direct(cx.root, &rel).is_err() {
            break; // a daemon replaced a directory above it meanwhile
        }
        let mut e = cx.event(Op::SlowAppend);
        e.seq = cx.seq + k;
        e.touched.push(rel.clone());
        let more = content(
            cx.seed,
            cx.seq,
            &format!("slow append {k}"),
            rng.range(4 << 10, 64 << 10) as usize,
            false,
        );
        match append_file(cx.root, &rel, &more, true) {
            Ok((before, after)) => {
                if before != Item::file(b"") || k > 0 {
                    e.observed = vec![(rel.clone(), before)];
                }
                e.written.push((rel.clone(), after));
            }
            Err(err) => e.note = format!("failed: {err}"),
        }
        e.end_ns = now_ns();
        e.note = format!("{} append {k}", e.note).trim().to_string();
        events.push(e);
        std::thread::sleep(Duration::from_millis(rng.range(20, 250)));
    }
    Some(events)
}

/// A new file at a given path (the harness's finale).
pub fn create_at(cx: &Ctx, rng: &mut Rng, rel: &str) -> Event {
    let mut e = cx.event(Op::Create);
    e.touched.push(rel.to_string());
    let data = cx.text("finale", rng);
    match write_in_place(cx.root, rel, &data) {
        Ok((item, us)) => {
            e.transient.push((rel.to_string(), Item::file(b""), us));
            e.written.push((rel.to_string(), item));
        }
        Err(err) => e.note = format!("failed: {err}"),
    }
    e.end_ns = now_ns();
    e
}

/// One endpoint's side of [`Op::SameFileEdit`]: rewrite or append to a hot file (creating it
/// if this endpoint lost it).
pub fn hot_edit(cx: &Ctx, rng: &mut Rng, hot: u64) -> Event {
    let rel = format!("hot/h{hot}.txt");
    let mut e = cx.event(Op::SameFileEdit);
    e.touched.push(rel.clone());
    if let Err(err) = direct(cx.root, &rel) {
        e.note = format!("failed: {err}");
        e.end_ns = now_ns();
        return e;
    }
    e.observed = observe(cx.root, &rel);
    let is_file = std::fs::symlink_metadata(cx.root.join(&rel)).is_ok_and(|md| md.is_file());
    let r = match is_file {
        true if rng.chance(0.4) => {
            let more = content(
                cx.seed,
                cx.seq,
                &format!("hot append {}", cx.endpoint),
                rng.range(10, 500) as usize,
                false,
            );
            append_file(cx.root, &rel, &more, false).map(|(before, after)| {
                e.observed = vec![(rel.clone(), before)];
                e.written.push((rel.clone(), after));
            })
        }
        _ => {
            let data = content(
                cx.seed,
                cx.seq,
                &format!("hot edit {}", cx.endpoint),
                rng.range(50, 3000) as usize,
                false,
            );
            if let Ok(md) = std::fs::symlink_metadata(cx.root.join(&rel))
                && !md.is_file()
            {
                // A hot path turned into a directory or symlink elsewhere: replace it.
                let _ = std::fs::remove_dir_all(cx.root.join(&rel));
                let _ = std::fs::remove_file(cx.root.join(&rel));
            }
            write_in_place(cx.root, &rel, &data).map(|(item, us)| {
                e.transient.push((rel.clone(), Item::file(b""), us));
                e.written.push((rel.clone(), item));
            })
        }
    };
    if let Err(err) = r {
        e.note = format!("failed: {err}");
    }
    e.end_ns = now_ns();
    e
}
