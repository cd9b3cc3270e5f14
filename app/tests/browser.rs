//! The web UI in a real browser: Debian's headless Chromium, driven over
//! WebDriver (chromedriver, started here on a free port), against the real
//! stack through the edge. Logs in, adds, searches as you type, edits (and
//! meets a 412 for a stale edit), imports a .vcf, merges duplicates and
//! undoes the merge, links and unlinks an account, forgets a SyncML device,
//! exports and logs out. Screenshots go to
//! `target/browser-screenshots/`.
//!
//! Needs the `chromium` and `chromium-driver` packages; `./dev test`
//! installs them. Without them this test fails (it never skips).

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use onebook_app::config::{Overrides, WebappConfig};
use onebook_domain::accounts::Viewer;
use onebook_domain::syncml_state::SyncAnchors;
use onebook_domain::Domain;
use onebook_testkit::{repo_root, unique_email, Stack, TestUser};
use serde_json::{json, Value};
use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "test-password-1";
const PATIENCE: Duration = Duration::from_secs(20);

/// An executable on PATH (or in /usr/bin), or a failure telling how to get it.
fn required(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed. The browser test needs Debian's chromium and \
                 chromium-driver packages: `./dev test` installs them (or run \
                 `source scripts/deps.sh; deps_ensure browser`)."
            )
        })
}

/// chromedriver (and the Chromium it starts, in the same process group)
/// plus the browser profile; all gone when this is dropped, failure or not.
struct Driver {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        required("chromium");
        let chromedriver = required("chromedriver");
        let dir = std::env::temp_dir().join(unique_email("onebook-browser").replace('@', "-"));
        std::fs::create_dir_all(dir.join("profile")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group, so Drop can end Chromium along with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromedriver: {e}"));
        let driver = Driver { child, dir, port };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port}; see {}",
                driver.dir.join("chromedriver.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    async fn browser(&self) -> Client {
        let profile = self.dir.join("profile");
        let capabilities = json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": required("chromium"),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--ignore-certificate-errors",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "starting Chromium through chromedriver: {e}; see {}",
                    self.dir.join("chromedriver.log").display()
                )
            })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = repo_root().join("target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) -> PathBuf {
    let png = browser.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png).unwrap();
    path
}

/// Retries `check` until it yields a value or PATIENCE runs out.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The form control whose label reads exactly `label`.
fn field(label: &str) -> String {
    format!(
        "//label[normalize-space(text()[1])='{label}']//*[self::input or self::textarea or self::select]"
    )
}

fn button(text: &str) -> String {
    format!("//button[normalize-space()='{text}']")
}

/// The first element at `xpath` that is displayed, once there is one.
async fn find(browser: &Client, xpath: &str) -> fantoccini::elements::Element {
    eventually(&format!("a visible {xpath}"), || async {
        let all = browser
            .find_all(Locator::XPath(xpath))
            .await
            .map_err(|e| e.to_string())?;
        for element in all {
            if element.is_displayed().await.unwrap_or(false) {
                return Ok(Some(element));
            }
        }
        Ok(None)
    })
    .await
}

async fn click(browser: &Client, xpath: &str) {
    find(browser, xpath)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {xpath}: {e}"));
}

async fn type_into(browser: &Client, label: &str, text: &str) {
    let input = find(browser, &field(label)).await;
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

/// Waits until the element at `xpath` is shown and its text contains `wanted`.
async fn text_of(browser: &Client, xpath: &str, wanted: &str) -> String {
    eventually(&format!("{xpath} to say {wanted:?}"), || async {
        let Ok(element) = browser.find(Locator::XPath(xpath)).await else {
            return Ok(None);
        };
        let text = element.text().await.map_err(|e| e.to_string())?;
        let shown = element.is_displayed().await.unwrap_or(false);
        if shown && text.contains(wanted) {
            Ok(Some(text))
        } else {
            Err(format!("(last text: {text:?})"))
        }
    })
    .await
}

/// The names in the contact list, once it shows exactly `count` of them.
async fn listed_names(browser: &Client, count: usize) -> Vec<String> {
    eventually(&format!("{count} contacts listed"), || async {
        let items = browser
            .find_all(Locator::XPath("//ul[@aria-label='Contacts']/li/button"))
            .await
            .map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        for item in items {
            names.push(item.text().await.map_err(|e| e.to_string())?);
        }
        if names.len() == count {
            Ok(Some(names))
        } else {
            Err(format!("(listed: {names:?})"))
        }
    })
    .await
}

async fn contacts(user: &TestUser, stack: &Stack, query: &str) -> Value {
    user.client
        .get(format!("{}/api/v1/contacts", stack.edge_https))
        .query(&[("q", query), ("limit", "500")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn fixture(name: &str) -> String {
    let path = repo_root().join("domain/tests/data/vcards").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn the_web_ui_works_in_headless_chromium() {
    let stack = Stack::get();
    let driver = Driver::start();
    let user = TestUser::sign_up(stack, "browser").await;
    // Two contacts sharing an email: a duplicate pair to merge in the UI.
    let twins = unique_email("twins");
    for name in ["Dup Alpha", "Dup Beta"] {
        let created = user
            .client
            .post(format!("{}/api/v1/contacts", stack.edge_https))
            .json(&json!({"formatted_name": name, "emails": [{"value": twins}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }

    let browser = driver.browser().await;
    let outcome = std::panic::AssertUnwindSafe(walk_through(&browser, stack, &user, &driver))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        if let Ok(png) = browser.screenshot().await {
            let path = screenshot_dir().join("browser-failure.png");
            let _ = std::fs::write(&path, png);
            eprintln!("screenshot of the failure: {}", path.display());
        }
        if let Ok(log) = std::fs::read_to_string(driver.dir.join("chromedriver.log")) {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "chromedriver log (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
    }
    let _ = browser.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn walk_through(browser: &Client, stack: &Stack, user: &TestUser, driver: &Driver) {
    // Log in with the server-rendered form.
    browser
        .goto(&format!("{}/", stack.edge_https))
        .await
        .unwrap();
    type_into(browser, "Email", &user.email).await;
    type_into(browser, "Password", PASSWORD).await;
    click(browser, &button("Log in")).await;
    find(browser, &field("Search contacts")).await;
    text_of(browser, "//*[@id='me']", &user.email).await;
    listed_names(browser, 2).await;

    // No inline script or style is needed: the CSP allows none.
    let csp = user
        .client
        .get(format!("{}/", stack.edge_https))
        .send()
        .await
        .unwrap()
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "{csp}");

    // Add a contact.
    click(browser, &button("Add contact")).await;
    type_into(browser, "Name", "Zelda Browserton").await;
    type_into(browser, "Emails (one per line)", "zelda@hyrule.test").await;
    type_into(browser, "Groups (comma-separated)", "Heroes").await;
    click(browser, &button("Save")).await;
    text_of(
        browser,
        "//*[@role='status' and @id='message']",
        "Added Zelda Browserton",
    )
    .await;
    text_of(browser, "//*[@id='detail-heading']", "Zelda Browserton").await;
    listed_names(browser, 3).await;

    // Search as you type: no Enter, no button.
    let search = find(browser, &field("Search contacts")).await;
    search.send_keys("zeld").await.unwrap();
    assert_eq!(listed_names(browser, 1).await, ["Zelda Browserton"]);
    text_of(browser, "//*[@id='list-summary']", "matching “zeld”").await;

    // Open it from the list and edit it (PUT with If-Match).
    click(browser, &button("Close")).await;
    click(
        browser,
        "//ul[@aria-label='Contacts']//button[normalize-space()='Zelda Browserton']",
    )
    .await;
    click(browser, &button("Edit")).await;
    type_into(browser, "Name", "Zelda Edited").await;
    type_into(browser, "Organisation", "Hyrule Ltd").await;
    click(browser, &button("Save")).await;
    text_of(browser, "//*[@id='message']", "Saved Zelda Edited").await;
    let found = contacts(user, stack, "zelda").await;
    assert_eq!(found["total"], 1, "{found}");
    let zelda = &found["contacts"][0];
    assert_eq!(zelda["formatted_name"], "Zelda Edited");
    assert_eq!(zelda["organization"], "Hyrule Ltd");
    assert_eq!(zelda["emails"][0]["value"], "zelda@hyrule.test");
    assert_eq!(zelda["categories"], json!(["Heroes"]));

    // A stale edit: someone else saves first; the UI says so (412).
    click(browser, &button("Edit")).await;
    let mut elsewhere = zelda.clone();
    for meta in ["id", "version", "created_at", "updated_at"] {
        elsewhere.as_object_mut().unwrap().remove(meta);
    }
    elsewhere["note"] = json!("changed on the phone");
    let id = zelda["id"].as_str().unwrap();
    let put = user
        .client
        .put(format!("{}/api/v1/contacts/{id}", stack.edge_https))
        .json(&elsewhere)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    type_into(browser, "Name", "Zelda Stale").await;
    click(browser, &button("Save")).await;
    text_of(
        browser,
        "//*[@role='alert']",
        "Someone changed this contact since you opened it",
    )
    .await;
    assert_eq!(
        contacts(user, stack, "zelda").await["contacts"][0]["formatted_name"],
        "Zelda Edited"
    );
    click(browser, &button("Open the latest version")).await;
    text_of(browser, "//*[@id='detail-fields']", "changed on the phone").await;

    // Import a .vcf file: two good cards and a broken one.
    // Backspace like a user (WebDriver's clear fires no input event).
    let backspaces = char::from(fantoccini::key::Key::Backspace).to_string();
    search.send_keys(&backspaces.repeat(4)).await.unwrap();
    listed_names(browser, 3).await;
    let upload = driver.dir.join("upload.vcf");
    std::fs::write(
        &upload,
        format!(
            "{}\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nthis line has no colon\r\nEND:VCARD\r\n{}",
            fixture("anna-mueller-30.vcf"),
            fixture("olga-30-minimal.vcf")
        ),
    )
    .unwrap();
    let file_input = find(browser, &field("Import a .vcf file")).await;
    file_input.send_keys(&path_text(&upload)).await.unwrap();
    click(browser, &button("Import")).await;
    text_of(
        browser,
        "//*[@aria-label='Import report']",
        "Imported 2 contacts from upload.vcf",
    )
    .await;
    text_of(browser, "//ul[@aria-label='Import errors']/li", "Card 2").await;
    let names = listed_names(browser, 5).await;
    assert!(
        names.contains(&"Dr. Anna Maria Müller".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"Ольга Петрова".to_string()), "{names:?}");
    assert_eq!(contacts(user, stack, "").await["total"], 5);

    // Groups: click one to filter the list; the export link follows it.
    click(browser, &button("Heroes (1)")).await;
    assert_eq!(listed_names(browser, 1).await, ["Zelda Edited"]);
    let export = find(browser, "//a[starts-with(normalize-space(), 'Export')]").await;
    let href = export.attr("href").await.unwrap().unwrap_or_default();
    assert!(href.contains("group=Heroes"), "{href}");
    click(browser, &button("All contacts")).await;
    listed_names(browser, 5).await;

    // Review duplicates and merge the pair sharing an email.
    click(browser, &button("Review duplicates")).await;
    text_of(browser, "//ul[@aria-label='Duplicate pairs']", "Why: ").await;
    click(browser, &button("Merge into Dup Alpha")).await;
    text_of(
        browser,
        "//*[@id='merge-result']",
        "Merged Dup Beta into Dup Alpha",
    )
    .await;
    let twins = eventually("the API to show one twin", || async {
        let all = contacts(user, stack, "dup").await;
        Ok((all["total"] == 1).then_some(all))
    })
    .await;
    assert_eq!(
        twins["contacts"][0]["formatted_name"], "Dup Alpha",
        "{twins}"
    );
    listed_names(browser, 4).await;
    let shot = screenshot(browser, "browser-ui.png").await;
    eprintln!("screenshot: {}", shot.display());

    // Undo the merge.
    click(browser, &button("Undo merge")).await;
    text_of(browser, "//*[@id='merge-result']", "Merge undone").await;
    assert_eq!(contacts(user, stack, "dup").await["total"], 2);
    listed_names(browser, 5).await;

    // Linked accounts: a bad account is refused by field, a good one is
    // listed (never its token), then unlinked.
    click(browser, &button("Linked accounts")).await;
    text_of(
        browser,
        "//ul[@aria-label='Linked accounts']",
        "No linked accounts yet",
    )
    .await;
    find(browser, &field("Service"))
        .await
        .select_by_label("Highrise")
        .await
        .unwrap();
    text_of(browser, "//*[@id='l-account-hint']", "highrisehq.com").await;
    type_into(browser, "Account", "not a subdomain").await;
    type_into(browser, "Token", LINK_TOKEN).await;
    click(browser, &button("Link account")).await;
    text_of(browser, "//*[@role='alert']", "(account)").await;
    type_into(browser, "Account", "acme-browser").await;
    click(browser, &button("Link account")).await;
    text_of(
        browser,
        "//ul[@aria-label='Linked accounts']",
        "Highrise · acme-browser",
    )
    .await;
    text_of(
        browser,
        "//ul[@aria-label='Linked accounts']",
        "Last sync: not synced yet",
    )
    .await;
    let links = user.get_json(stack, "/api/v1/linked-accounts").await;
    assert_eq!(links.as_array().map(Vec::len), Some(1), "{links}");
    assert_eq!(links[0]["account"], "acme-browser");
    assert!(!browser.source().await.unwrap().contains(LINK_TOKEN));
    let shot = screenshot(browser, "browser-linked-accounts.png").await;
    eprintln!("screenshot: {}", shot.display());
    // Answer the confirmation dialogs with OK.
    browser
        .execute("window.confirm = () => true; return true;", vec![])
        .await
        .unwrap();
    click(browser, &button("Unlink")).await;
    text_of(
        browser,
        "//ul[@aria-label='Linked accounts']",
        "No linked accounts yet",
    )
    .await;
    assert_eq!(
        user.get_json(stack, "/api/v1/linked-accounts").await,
        json!([])
    );

    // Devices: a phone that synced over SyncML is listed with its DevInf
    // and datastores; forgetting it leaves no anchors (next sync is slow).
    let (domain, owner) = synced_phone(stack, user).await;
    click(browser, &button("Devices")).await;
    text_of(
        browser,
        "//ul[@aria-label='Devices']",
        "SyncEvolution (Patrick Ohly)",
    )
    .await;
    text_of(browser, "//ul[@aria-label='Devices']", PHONE).await;
    text_of(
        browser,
        "//table[@aria-label='Datastores of SyncEvolution (Patrick Ohly)']",
        "./contacts",
    )
    .await;
    let shot = screenshot(browser, "browser-devices.png").await;
    eprintln!("screenshot: {}", shot.display());
    click(browser, &button("Forget")).await;
    text_of(browser, "//*[@id='message']", "slow sync").await;
    text_of(
        browser,
        "//ul[@aria-label='Devices']",
        "No devices have synced yet",
    )
    .await;
    assert_eq!(
        domain
            .syncml_anchors(&owner, PHONE, "./contacts")
            .await
            .unwrap(),
        None
    );

    // Log out: back to the login form, and the session is over.
    click(browser, &button("Log out")).await;
    find(browser, &field("Password")).await;
    let me = browser
        .execute("return fetch('/api/v1/me').then(r => r.status);", vec![])
        .await
        .unwrap();
    assert_eq!(me, json!(401));
}

const LINK_TOKEN: &str = "hr-browser-token-0123456789";
const PHONE: &str = "IMEI:356938035643809";

/// What the sync server stores for a phone after a completed sync (same
/// domain calls), with one connection per shard.
async fn synced_phone(stack: &Stack, user: &TestUser) -> (Domain, Viewer) {
    let path = repo_root().join("configs/webapp.dev.toml");
    let mut config = WebappConfig::load(&path, &Overrides::default()).unwrap();
    config.database.pool_size = 1;
    for (shard, url) in config.database.shards.iter_mut().zip(&stack.shard_urls) {
        shard.url = url.clone();
    }
    let domain = Domain::new(&config.database, &config.cache).unwrap();
    let owner = domain.viewer_by_email(&user.email).await.unwrap().unwrap();
    let devinf = "<DevInf xmlns=\"syncml:devinf\"><VerDTD>1.2</VerDTD><Man>Patrick Ohly</Man>\
        <Mod>SyncEvolution</Mod><SwV>3.4.0.47</SwV><DevID>IMEI:356938035643809</DevID>\
        <DevTyp>phone</DevTyp></DevInf>";
    domain
        .set_syncml_devinf(&owner, PHONE, devinf.as_bytes())
        .await
        .unwrap();
    let anchors = SyncAnchors {
        client_next: "20261127T130000Z".into(),
        server_next: "s-7".into(),
        last_seq: owner.change_seq,
    };
    domain
        .set_syncml_anchors(&owner, PHONE, "./contacts", &anchors)
        .await
        .unwrap();
    (domain, owner)
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temp path").to_string()
}
