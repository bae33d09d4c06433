//! The web app (`prism-sync ui`) in a real browser: headless Chromium driven over WebDriver
//! (chromedriver), against the real binary and real sync sets. Each test clicks through a page
//! the way a researcher would and checks the result on disk and through the command line, and
//! writes a screenshot of every page it visits to `$PRISM_UI_SCREENSHOTS` (default:
//! `<target>/tmp/ui-screenshots/`; the README links a committed set under `docs/screenshots/`).
//!
//! Chromium and chromedriver come from Debian (`chromium`, `chromium-driver`; `.ci/run` installs
//! them). Without them these tests fail and say so — they never skip.

mod cli_env;

use std::fs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_env::ui::RunningUi;
use cli_env::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Generous: the machine is shared, and Chromium's first start is slow.
const START_DEADLINE: Duration = Duration::from_secs(60);
const PAGE_DEADLINE: Duration = Duration::from_secs(30);
/// The flags that make headless Chromium behave in a container without a network.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// One browser at a time in this test binary: two Chromiums on a shared 2-core machine make
/// every timing worse.
static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver process and a Chromium session on it.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
    downloads: PathBuf,
}

impl Browser {
    async fn start(downloads: &Path) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: these tests need Chromium (apt-get install chromium chromium-driver; .ci/run does)"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {CHROMEDRIVER}: {e} (apt-get install chromium-driver; .ci/run does)")
            });
        let profile = tempfile::tempdir().unwrap();
        fs::create_dir_all(downloads).unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.to_str().unwrap(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
        });
        let caps = caps.as_object().unwrap().clone();
        let deadline = Instant::now() + START_DEADLINE;
        let client = loop {
            let mut b =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            b.capabilities(caps.clone());
            match b.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no browser session from chromedriver within {START_DEADLINE:?}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser {
            driver,
            client: Some(client),
            _profile: profile,
            downloads: downloads.to_path_buf(),
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }

    /// Writes a screenshot of the page as `<name>.png`.
    async fn shot(&self, name: &str) {
        let dir = std::env::var_os("PRISM_UI_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"));
        fs::create_dir_all(&dir).unwrap();
        let png = self.c().screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.expect("navigate");
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            match self.c().find(Locator::Css(css)).await {
                Ok(e) => return e,
                Err(e) => {
                    if Instant::now() > deadline {
                        let src = self.c().source().await.unwrap_or_default();
                        panic!("no {css} on the page within {PAGE_DEADLINE:?}: {e}\n{src}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Waits until `css`'s text satisfies `want` (the page may update itself meanwhile).
    async fn wait_text(&self, css: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let t = match self.c().find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if want(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {css} says {t:?} after {PAGE_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The file `name` once the browser has finished downloading it.
    async fn downloaded(&self, name: &str) -> Vec<u8> {
        let p = self.downloads.join(name);
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let partial = fs::read_dir(&self.downloads).unwrap().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".crdownload")
            });
            if p.exists() && !partial {
                return fs::read(&p).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{name} was not downloaded into {} within {PAGE_DEADLINE:?}",
                self.downloads.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn set_versions(env: &Env, set: &str) -> Vec<String> {
    env.json(&["snapshots", set])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_an_older_time_and_download_the_file_as_it_was() {
    let _one = BROWSER_LOCK.lock().await;
    let env = Env::with_repo();
    let folder = env.path("project");
    let v1 = random_bytes(3 << 20, 1); // several chunks
    write(&folder, "notes.md", b"# Results\nfirst draft\n");
    write(&folder, "data/results.bin", &v1);
    env.ok(&["init", folder.to_str().unwrap(), "--name", "p"]);
    env.ok(&["sync", "p"]);
    for i in 2..=3u8 {
        std::thread::sleep(Duration::from_millis(1100));
        write(
            &folder,
            "notes.md",
            format!("# Results\ndraft {i}\n").as_bytes(),
        );
        write(
            &folder,
            "data/results.bin",
            &random_bytes(3 << 20, i as u64),
        );
        env.ok(&["sync", "p"]);
    }
    let versions = set_versions(&env, "p");
    assert_eq!(versions.len(), 3);

    let ui = RunningUi::start(env.command::<&str>(&[]));
    let b = Browser::start(&env.path("downloads")).await;
    b.goto(&ui.url).await;
    // The token went into a cookie and out of the address bar.
    let here = b.c().current_url().await.unwrap();
    assert!(!here.as_str().contains("t="), "{here}");
    b.click("a[href='/sets/p/browse']").await;
    b.wait_text("#version-id", "the newest version first", |t| {
        t == &versions[2][..8]
    })
    .await;
    b.shot("browse").await;

    // Pick the oldest time on the timeline: the slider, by keyboard, then "Show".
    let slider = b.find("#version-slider").await;
    slider.send_keys("\u{E011}").await.unwrap(); // Home
    let label = b.text("#version-time").await;
    assert!(label.contains("by local"), "{label}");
    b.click("#show-version").await;
    b.wait_text("#version-id", "the oldest version", |t| {
        t == &versions[0][..8]
    })
    .await;
    assert!(
        b.text("#listing").await.contains("data/"),
        "the folder as it was"
    );
    b.click("#listing a[href*='path=data']").await;
    b.find("tr[data-name='results.bin'] a.download").await;
    b.shot("browse-older").await;
    b.click("tr[data-name='results.bin'] a.download").await;
    let got = b.downloaded("results.bin").await;
    assert_eq!(got.len(), v1.len());
    assert!(got == v1, "the download holds the oldest version's bytes");

    // A file's history, with the last change as a side-by-side diff.
    b.goto(&ui.at("/sets/p/file?path=notes.md")).await;
    let rows = b
        .c()
        .find_all(Locator::Css("#history tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "created, modified, modified");
    let diff = b.text("table.diff").await;
    assert!(
        diff.contains("draft 2") && diff.contains("draft 3"),
        "{diff}"
    );
    b.shot("file-history").await;

    // Restore the first version beside the file: the command ran is on the page.
    let first = &versions[0];
    b.click(&format!(
        "div.choice[data-version='{first}'] button[value='beside']"
    ))
    .await;
    let ran = b.text("#ran").await;
    assert_eq!(
        ran,
        format!(
            "prism-sync restore p --version {} --path notes.md --beside",
            &first[..8]
        )
    );
    assert_eq!(b.text("#exit-code").await, "0");
    b.shot("action-result").await;
    let copy = fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("notes.restored-"))
        .expect("a restored copy beside notes.md");
    assert_eq!(fs::read(copy).unwrap(), b"# Results\nfirst draft\n");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_resolved_with_a_click_is_gone_on_both_endpoints() {
    let _one = BROWSER_LOCK.lock().await;
    let laptop = Env::with_repo();
    let lf = laptop.path("project");
    write(&lf, "notes.md", b"line 1\nline 2\nline 3\n");
    laptop.ok(&["init", lf.to_str().unwrap(), "--name", "p"]);
    laptop.ok(&["sync", "p"]);
    let v = laptop.json(&["add-instance", "p", "ws1"]);
    let key = v["key_file"].as_str().unwrap().to_string();
    let ws = Env::without_password();
    let wf = ws.path("project");
    ws.ok(&[
        "join",
        "p",
        wf.to_str().unwrap(),
        "--repo",
        laptop.repo_str(),
        "--endpoint",
        "ws1",
        "--key-file",
        &key,
    ]);
    ws.ok(&["sync", "p"]);
    assert_eq!(
        fs::read(wf.join("notes.md")).unwrap(),
        b"line 1\nline 2\nline 3\n"
    );

    // Both change the same line; the workspace syncs second and parks the conflict.
    write(&lf, "notes.md", b"line 1\nline 2 (laptop)\nline 3\n");
    write(&wf, "notes.md", b"line 1\nline 2 (workspace)\nline 3\n");
    laptop.ok(&["sync", "p"]);
    ws.ok(&["sync", "p"]);
    let parked = ws.json(&["conflicts", "p"]);
    assert_eq!(parked.as_array().unwrap().len(), 1, "{parked}");

    let ui = RunningUi::start(ws.command::<&str>(&[]));
    let b = Browser::start(&ws.path("downloads")).await;
    b.goto(&ui.url).await;
    b.wait_text(
        "section[data-set='p'] .conflict-count",
        "one conflict",
        |t| t == "1",
    )
    .await;
    b.click("a[href='/sets/p/conflicts']").await;
    let diff = b.text("section.conflict table.diff").await;
    assert!(
        diff.contains("line 2 (workspace)") && diff.contains("line 2 (laptop)"),
        "both versions side by side: {diff}"
    );
    b.shot("conflicts").await;
    b.click("section.conflict button[data-keep='local']").await;
    assert_eq!(
        b.text("#ran").await,
        "prism-sync resolve p notes.md --keep local"
    );
    assert_eq!(b.text("#exit-code").await, "0");
    b.click("#back").await;
    b.find("#no-conflicts").await;

    // The laptop's next step takes the kept version: the conflict is gone everywhere.
    laptop.ok(&["sync", "p"]);
    let want = b"line 1\nline 2 (workspace)\nline 3\n";
    assert_eq!(fs::read(wf.join("notes.md")).unwrap(), want);
    assert_eq!(fs::read(lf.join("notes.md")).unwrap(), want);
    for (who, e) in [("laptop", &laptop), ("workspace", &ws)] {
        let c = e.json(&["conflicts", "p"]);
        assert!(c.as_array().unwrap().is_empty(), "{who}: {c}");
    }
    let laptop_ui = RunningUi::start(laptop.command::<&str>(&[]));
    b.goto(&laptop_ui.url).await;
    b.goto(&laptop_ui.at("/sets/p/conflicts")).await;
    b.find("#no-conflicts").await;
    b.close().await;
}
