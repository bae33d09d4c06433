//! The pages, as functions from plain data to HTML (maud escapes every value). No logic here
//! beyond presentation: what to show is decided by the handlers in `routes`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use maud::{DOCTYPE, Markup, html};

use super::actions::{ActionRun, show};
use super::pct_encode;
use crate::browse::history::PathVersion;
use crate::browse::textdiff::{Row, Side};
use crate::id::SnapshotId;
use crate::snapshot::{Node, NodeKind, display_path};
use crate::time::{format_ago, format_local};
use crate::units::bytes;

pub const STYLE: &str = include_str!("assets/style.css");
pub const SCRIPT: &str = include_str!("assets/app.js");

/// Which part of the app a page belongs to (the navigation marks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Sets,
    Repository,
}

/// The page frame: navigation, the page's own content, the footer.
pub fn layout(title: &str, section: Section, body: Markup) -> Markup {
    let current = |s: Section| if s == section { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · prism-sync" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                a.visually-hidden href="#main" { "Skip to the content" }
                header {
                    nav aria-label="Main" {
                        span.brand { "prism-sync" }
                        a href="/" aria-current=[current(Section::Sets)] { "Sync sets" }
                        a href="/repo/browse" aria-current=[current(Section::Repository)] { "Repository" }
                    }
                }
                main #main { (body) }
                footer {
                    "Every button here runs a prism-sync command, and the page shows which: "
                    "the same can be done in a terminal."
                }
            }
        }
    }
}

pub fn when(ns: i64, now_ns: i64) -> Markup {
    html! {
        time datetime=(crate::time::format_rfc3339(ns)) title=(format_ago(ns, now_ns)) {
            (format_local(ns))
        }
    }
}

/// A command as the user would type it, for beside a button.
pub fn command(args: &[OsString]) -> Markup {
    html! { code.cmd { (show(args)) } }
}

pub fn args(parts: &[&[u8]]) -> Vec<OsString> {
    parts
        .iter()
        .map(|p| OsString::from_vec(p.to_vec()))
        .collect()
}

/// The hidden field every state-changing form carries.
pub fn token_field(token: &str) -> Markup {
    html! { input type="hidden" name="token" value=(token); }
}

pub fn error_page(title: &str, message: &str) -> Markup {
    layout(
        title,
        Section::Sets,
        html! {
            h1 { (title) }
            p.notice.bad role="alert" { (message) }
            p { a href="/" { "Back to the sync sets" } }
        },
    )
}

/// What an action did: the command, its exit code and output, and where to go next.
pub fn action_result(run: &ActionRun, back: &str, back_label: &str) -> Markup {
    let title = if run.ok() { "Done" } else { "It did not work" };
    layout(
        title,
        Section::Sets,
        html! {
            h1 { (title) }
            div class=(if run.ok() { "notice ok" } else { "notice bad" }) role="status" {
                p { "Ran " code.cmd #ran { (run.shown) } }
                p { "Exit code " span #exit-code { (run.code) } }
            }
            @if !run.stdout.trim().is_empty() {
                h2 { "Output" }
                pre #stdout { (run.stdout) }
            }
            @if !run.stderr.trim().is_empty() {
                h2 { "Messages" }
                pre #stderr { (run.stderr) }
            }
            p { a #back href=(back) { (back_label) } }
        },
    )
}

/// One sync set on the dashboard (until the typed status lands, the basics).
pub struct SetCard {
    pub name: String,
    pub folder: String,
    pub repository: String,
    pub conflicts: usize,
}

pub fn sets_fragment(sets: &[SetCard], recent: &[ActionRun], now_ns: i64) -> Markup {
    html! {
        @if sets.is_empty() {
            p.notice { "No sync sets here yet. Start one with " code.cmd { "prism-sync init ~/research/project1" } "." }
        }
        @for s in sets {
            section.card aria-labelledby=(format!("set-{}", s.name)) data-set=(s.name) {
                h2 #(format!("set-{}", s.name)) { (s.name) }
                dl.kv {
                    dt { "Folder" } dd.mono { (s.folder) }
                    dt { "Repository" } dd.mono { (s.repository) }
                }
                div.actions {
                    a href=(format!("/sets/{}/browse", s.name)) { "Browse versions" }
                    a href=(format!("/sets/{}/conflicts", s.name)) {
                        "Conflicts (" span.conflict-count { (s.conflicts) } ")"
                    }
                }
            }
        }
        @if !recent.is_empty() {
            h2 { "Recent actions from this page" }
            ul {
                @for r in recent {
                    li { (when(r.time_ns, now_ns)) " " code.cmd { (r.shown) } " — " @if r.ok() { span.state.in-sync { "done" } } @else { span.state.halted { "failed (exit " (r.code) ")" } } }
                }
            }
        }
    }
}

pub fn dashboard(fragment: Markup) -> Markup {
    layout(
        "Sync sets",
        Section::Sets,
        html! {
            h1 { "Sync sets" }
            div #sets data-refresh="/part/sets" aria-live="polite" { (fragment) }
        },
    )
}

// ---- browsing -----------------------------------------------------------------------------------

/// Whose versions a browse page shows.
#[derive(Debug, Clone)]
pub enum Scope {
    Set(String),
    Repository(String),
}

impl Scope {
    pub fn base(&self) -> String {
        match self {
            Scope::Set(n) => format!("/sets/{n}"),
            Scope::Repository(_) => "/repo".into(),
        }
    }
    fn section(&self) -> Section {
        match self {
            Scope::Set(_) => Section::Sets,
            Scope::Repository(_) => Section::Repository,
        }
    }
}

pub struct VersionItem {
    pub id: SnapshotId,
    pub time_ns: i64,
    /// Who made it (endpoint, or host for plain backups).
    pub by: String,
}

pub struct BrowseView {
    pub scope: Scope,
    pub versions: Vec<VersionItem>,
    /// Position of the version shown in `versions`.
    pub current: usize,
    pub path: Vec<u8>,
    pub entries: Vec<Node>,
    pub now_ns: i64,
}

fn crumbs(base: &str, v: &SnapshotId, root_label: &str, path: &[u8]) -> Markup {
    let comps = crate::snapshot::components(path);
    html! {
        nav.crumbs aria-label="Folder" {
            ol {
                li { a href=(format!("{base}/browse?v={}", v.to_hex())) { (root_label) } }
                @for (i, c) in comps.iter().enumerate() {
                    @let sub = comps[..=i].join(&b'/');
                    li {
                        @if i + 1 == comps.len() {
                            span aria-current="page" { (display_path(c)) }
                        } @else {
                            a href=(format!("{base}/browse?v={}&path={}", v.to_hex(), pct_encode(&sub))) { (display_path(c)) }
                        }
                    }
                }
            }
        }
    }
}

pub fn browse(v: &BrowseView) -> Markup {
    let base = v.scope.base();
    let (title, root_label) = match &v.scope {
        Scope::Set(n) => (format!("{n}: every version"), n.clone()),
        Scope::Repository(url) => (format!("Snapshots of {url}"), "snapshot".into()),
    };
    let body = match v.versions.get(v.current) {
        None => html! {
            h1 { (title) }
            p.notice { "No versions yet." }
        },
        Some(cur) => {
            let times: Vec<String> = v
                .versions
                .iter()
                .map(|x| format!("{} — by {}", format_local(x.time_ns), x.by))
                .collect();
            let times_json = serde_json::to_string(&times).expect("strings serialize");
            let id_hex = cur.id.to_hex();
            let older = v.current.checked_sub(1).map(|i| &v.versions[i]);
            let newer = v.versions.get(v.current + 1);
            let path_q = pct_encode(&v.path);
            html! {
                h1 { (title) }
                form.timeline method="get" action=(format!("{base}/browse")) aria-label="Timeline" {
                    label for="version-slider" { "Version " (v.current + 1) " of " (v.versions.len()) ": " }
                    output #version-time for="version-slider" { (times[v.current]) }
                    input #version-slider type="range" name="i" min="0" max=(v.versions.len() - 1)
                        value=(v.current) step="1" data-times=(times_json) data-output="version-time";
                    input type="hidden" name="path" value=(String::from_utf8_lossy(&v.path));
                    button #show-version type="submit" { "Show this version" }
                    @if let Some(o) = older {
                        a #older rel="prev" href=(format!("{base}/browse?v={}&path={path_q}", o.id.to_hex())) { "◀ Older" }
                    }
                    @if let Some(n) = newer {
                        a #newer rel="next" href=(format!("{base}/browse?v={}&path={path_q}", n.id.to_hex())) { "Newer ▶" }
                    }
                }
                p.muted {
                    "Showing the folder as it was at " (when(cur.time_ns, v.now_ns)) " (version "
                    code #version-id { (cur.id.short()) } ", by " (cur.by) ")."
                }
                (crumbs(&base, &cur.id, &root_label, &v.path))
                @if v.entries.is_empty() {
                    p.muted { "This folder was empty." }
                } @else {
                    table #listing {
                        caption.visually-hidden { "Entries of the folder in this version" }
                        thead { tr { th scope="col" { "Name" } th.num scope="col" { "Size" } th scope="col" { "Modified" } th scope="col" { span.visually-hidden { "Download" } } } }
                        tbody {
                            @for n in &v.entries {
                                @let p = crate::snapshot::join(&v.path, &n.name);
                                @let pq = pct_encode(&p);
                                tr data-name=(display_path(&n.name)) {
                                    td {
                                        @match &n.kind {
                                            NodeKind::Dir { .. } => {
                                                a href=(format!("{base}/browse?v={id_hex}&path={pq}")) { (display_path(&n.name)) "/" }
                                            }
                                            NodeKind::File { .. } => {
                                                @if matches!(v.scope, Scope::Set(_)) {
                                                    a href=(format!("{base}/file?path={pq}&b={id_hex}")) { (display_path(&n.name)) }
                                                } @else {
                                                    (display_path(&n.name))
                                                }
                                            }
                                            NodeKind::Symlink { target } => {
                                                (display_path(&n.name)) " → " span.mono { (display_path(target)) }
                                            }
                                        }
                                    }
                                    td.num { @if !n.is_dir() { (bytes(n.size())) } }
                                    td { @if n.mtime_ns != 0 { (when(n.mtime_ns, v.now_ns)) } }
                                    td {
                                        @if matches!(n.kind, NodeKind::File { .. }) {
                                            a.download href=(format!("{base}/download?v={id_hex}&path={pq}")) download=(display_path(&n.name)) { "Download" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                details {
                    summary { "All " (v.versions.len()) " versions" }
                    ol reversed {
                        @for (i, x) in v.versions.iter().enumerate().rev() {
                            li {
                                @if i == v.current { strong { (format_local(x.time_ns)) } } @else {
                                    a href=(format!("{base}/browse?v={}&path={path_q}", x.id.to_hex())) { (format_local(x.time_ns)) }
                                }
                                " — by " (x.by) " " code { (x.id.short()) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&title, v.scope.section(), body)
}

// ---- one file's history ---------------------------------------------------------------------------

/// Two versions of a file side by side.
pub enum Compare {
    Text(Vec<Row>),
    Same,
    /// Not shown as text (binary, too big, a symlink, missing): why, and what is known.
    Other(String),
}

pub struct FileView {
    pub set: String,
    pub repo_url: String,
    pub path: Vec<u8>,
    pub history: Vec<PathVersion>,
    pub a: Option<SnapshotId>,
    pub b: Option<SnapshotId>,
    pub compare: Option<Compare>,
    pub token: String,
    pub now_ns: i64,
}

fn diff_side(s: &Option<Side>, class: &str) -> Markup {
    match s {
        Some(s) => html! { td.no { (s.no) } td class=(class) { (s.text) } },
        None => html! { td.no {} td {} },
    }
}

pub fn diff_table(rows: &[Row], left: &str, right: &str) -> Markup {
    html! {
        table.diff {
            caption.visually-hidden { "Differences, " (left) " on the left, " (right) " on the right" }
            colgroup { col.no; col; col.no; col; }
            thead { tr { th colspan="2" scope="col" { (left) } th colspan="2" scope="col" { (right) } } }
            tbody {
                @for r in rows {
                    @match r {
                        Row::Gap => tr.gap { td colspan="4" { "⋯" } },
                        Row::Same(a, b) => tr { td.no { (a.no) } td { (a.text) } td.no { (b.no) } td { (b.text) } },
                        Row::Changed(a, b) => tr.changed { (diff_side(a, "del")) (diff_side(b, "add")) },
                    }
                }
            }
        }
    }
}

pub fn compare_block(c: &Compare, left: &str, right: &str) -> Markup {
    match c {
        Compare::Text(rows) => diff_table(rows, left, right),
        Compare::Same => html! { p.notice.ok { "Both versions have the same content." } },
        Compare::Other(why) => html! { p.notice { (why) } },
    }
}

fn summary(n: &Option<Node>) -> String {
    match n {
        None => "deleted".into(),
        Some(n) => format!("{} {}", n.type_name(), bytes(n.size())),
    }
}

pub fn file(v: &FileView) -> Markup {
    let shown = display_path(&v.path);
    let base = format!("/sets/{}", v.set);
    let pq = pct_encode(&v.path);
    let title = format!("{shown} in {}", v.set);
    let dir: Vec<u8> = match v.path.iter().rposition(|&b| b == b'/') {
        Some(i) => v.path[..i].to_vec(),
        None => Vec::new(),
    };
    let body = html! {
        h1 { "History of " code { (shown) } }
        p { a href=(format!("{base}/browse?path={}", pct_encode(&dir))) { "Back to the folder" } }
        @if v.history.is_empty() {
            p.notice { "No version of " (v.set) " holds this path." }
        } @else {
            form method="get" action=(format!("{base}/file")) {
                input type="hidden" name="path" value=(String::from_utf8_lossy(&v.path));
                table #history {
                    caption { "Every version in which it changed (newest first). Pick two to compare." }
                    thead {
                        tr {
                            th scope="col" { "A" } th scope="col" { "B" }
                            th scope="col" { "When" } th scope="col" { "What" } th.num scope="col" { "Size" }
                            th scope="col" { "By" } th scope="col" { "Get it back" }
                        }
                    }
                    tbody {
                        @for h in v.history.iter().rev() {
                            @let hex = h.id.to_hex();
                            @let label = format!("version of {}", format_local(h.time_ns));
                            tr data-version=(hex) {
                                td { @if h.node.is_some() { input type="radio" name="a" value=(hex) aria-label=(format!("Compare from the {label}")) checked[v.a == Some(h.id)]; } }
                                td { @if h.node.is_some() { input type="radio" name="b" value=(hex) aria-label=(format!("Compare to the {label}")) checked[v.b == Some(h.id)]; } }
                                td { (when(h.time_ns, v.now_ns)) br; code.muted { (h.id.short()) } }
                                td {
                                    (h.event.name())
                                    @if h.safety { br; span.muted { "local copy saved before a sync replaced it" } }
                                }
                                td.num { @if let Some(n) = &h.node { (bytes(n.size())) } }
                                td { (h.endpoint.as_deref().unwrap_or("?")) }
                                td {
                                    @if let Some(n) = &h.node {
                                        @if matches!(n.kind, NodeKind::File { .. }) {
                                            a.download href=(format!("{base}/download?v={hex}&path={pq}")) download=(display_path(&n.name)) { "Download" }
                                            br;
                                            span.muted { (command(&args(&[b"dump", b"--repo", v.repo_url.as_bytes(), &hex.as_bytes()[..8], &v.path]))) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                button #compare type="submit" { "Compare A with B" }
            }
            @if let (Some(a), Some(b), Some(c)) = (v.a, v.b, &v.compare) {
                h2 #comparison { "Changes from " code { (a.short()) } " to " code { (b.short()) } }
                (compare_block(c, &format!("A: {}", a.short()), &format!("B: {}", b.short())))
            }
            h2 { "Restore a version" }
            p { "Put a version back into the folder " (v.set) " syncs. Into the folder replaces the file there only if it has not changed since the last sync (otherwise nothing is written); beside it writes a dated copy next to it. The next sync shares it like any edit." }
            @for h in v.history.iter().rev().filter(|h| h.node.as_ref().is_some_and(|n| !n.is_dir())) {
                @let short = h.id.short();
                @let in_place = args(&[b"restore", v.set.as_bytes(), b"--version", short.as_bytes(), b"--path", &v.path, b"--in-place"]);
                @let beside = args(&[b"restore", v.set.as_bytes(), b"--version", short.as_bytes(), b"--path", &v.path, b"--beside"]);
                div.choice data-version=(h.id.to_hex()) {
                    strong { "Version of " (format_local(h.time_ns)) } " (" (summary(&h.node)) ", " code { (short) } ")"
                    div.actions {
                        form.inline method="post" action=(format!("{base}/restore")) {
                            (token_field(&v.token))
                            input type="hidden" name="v" value=(h.id.to_hex());
                            input type="hidden" name="path" value=(pct_encode(&v.path));
                            button type="submit" name="to" value="in_place" { "Restore into the folder" }
                        }
                        (command(&in_place))
                    }
                    div.actions {
                        form.inline method="post" action=(format!("{base}/restore")) {
                            (token_field(&v.token))
                            input type="hidden" name="v" value=(h.id.to_hex());
                            input type="hidden" name="path" value=(pct_encode(&v.path));
                            button type="submit" name="to" value="beside" { "Restore beside it" }
                        }
                        (command(&beside))
                    }
                }
            }
        }
    };
    layout(&title, Section::Sets, body)
}

// ---- conflicts ----------------------------------------------------------------------------------

pub struct SideInfo {
    /// "file 12 KiB, modified 2026-…" or "deleted".
    pub summary: String,
}

pub struct ConflictItem {
    pub path: Vec<u8>,
    pub kind: String,
    pub since_ns: i64,
    pub local: SideInfo,
    pub remote: SideInfo,
    pub compare: Compare,
    /// Set when a resolution waits for the next step.
    pub pending: Option<String>,
}

pub struct ConflictsView {
    pub set: String,
    pub endpoint: String,
    pub items: Vec<ConflictItem>,
    pub token: String,
    pub now_ns: i64,
}

pub fn conflicts(v: &ConflictsView) -> Markup {
    let base = format!("/sets/{}", v.set);
    let title = format!("Conflicts in {}", v.set);
    let body = html! {
        h1 { (title) }
        @if v.items.is_empty() {
            p.notice.ok #no-conflicts { "No conflicts: every path of " (v.set) " is in agreement here." }
        } @else {
            p { "Both sides changed these paths. Until you decide, each side keeps its own version and everything else keeps syncing." }
        }
        @for (i, c) in v.items.iter().enumerate() {
            @let shown = display_path(&c.path);
            section.card.conflict aria-labelledby=(format!("conflict-{i}")) data-path=(shown) {
                h2 #(format!("conflict-{i}")) { code { (shown) } }
                p.muted { (c.kind) ", since " (when(c.since_ns, v.now_ns)) }
                @if let Some(p) = &c.pending { p.notice { "Resolution chosen (" (p) "): the next sync applies it." } }
                div.sides {
                    div { h3 { "Here (" (v.endpoint) ")" } p { (c.local.summary) } }
                    div { h3 { "Shared (the other endpoints)" } p { (c.remote.summary) } }
                }
                (compare_block(&c.compare, &format!("Here ({})", v.endpoint), "Shared"))
                form method="post" action=(format!("{base}/resolve")) {
                    (token_field(&v.token))
                    input type="hidden" name="path" value=(pct_encode(&c.path));
                    fieldset {
                        legend { "Keep which version of " code { (shown) } "?" }
                        div.actions {
                            @for (keep, label, what) in [
                                ("local", "Keep local", "This folder's version wins everywhere."),
                                ("remote", "Keep remote", "The shared version replaces this folder's."),
                                ("both", "Keep both", "The shared version stays; this folder's is kept beside it as a conflict copy."),
                            ] {
                                div.choice {
                                    button type="submit" name="keep" value=(keep) data-keep=(keep) { (label) }
                                    p { (what) br; (command(&args(&[b"resolve", v.set.as_bytes(), &c.path, b"--keep", keep.as_bytes()]))) }
                                }
                            }
                        }
                    }
                }
            }
        }
        p { a href="/" { "Back to the sync sets" } }
    };
    layout(&title, Section::Sets, body)
}
