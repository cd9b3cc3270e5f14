//! Drives the real SyncML client, SyncEvolution 2.0.0 (Debian package
//! `syncevolution`; install with `source scripts/deps.sh; deps_ensure
//! syncml`), non-interactively: private HOME/XDG dirs, no D-Bus, no keyring,
//! only the file backend (one vCard per file; file name = LUID). See
//! research/syncml.md §1 for every property used here.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const PEER: &str = "testserver";
const DATASTORE: &str = "addressbook";

pub struct SyncEvolution {
    /// Client state (config, anchors, LUID maps, logs); kept across syncs
    /// so the second sync is a real two-way one.
    pub root: PathBuf,
    pub data: PathBuf,
    shim: PathBuf,
    backends: PathBuf,
}

/// What one sync reported: its exit code, output and `status.ini`.
pub struct Outcome {
    pub exit: i32,
    pub output: String,
    pub stats: HashMap<String, String>,
}

impl Outcome {
    /// A `status.ini` value; missing counters mean 0.
    pub fn stat(&self, key: &str) -> String {
        self.stats.get(key).cloned().unwrap_or_else(|| "0".into())
    }

    pub fn source_stat(&self, key: &str) -> String {
        self.stat(&format!("source-{DATASTORE}-{key}"))
    }

    /// Asserts a datastore counter, showing the client's output if it differs.
    #[track_caller]
    pub fn assert_source_stat(&self, key: &str, expected: &str) {
        assert_eq!(self.source_stat(key), expected, "{key}: {}", self.output);
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub struct Settings<'a> {
    pub url: &'a str,
    pub user: &'a str,
    pub password: &'a str,
    pub ca_file: &'a Path,
    pub wbxml: bool,
    pub auth: &'a str,
    pub uri: &'a str,
    /// What the client announces; SyncEvolution clamps it to >= 10240.
    pub max_msg_size: u32,
}

impl SyncEvolution {
    /// Builds the curl shim (from the C source next to this file) into a
    /// fresh client directory. Fails loudly when the client is missing.
    pub fn new(root: &Path) -> SyncEvolution {
        assert!(
            which("syncevolution") && which("gcc"),
            "SyncEvolution and gcc are needed: source scripts/deps.sh; deps_ensure syncml"
        );
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root).unwrap();
        let shim = root.join("se-curl-fix.so");
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/syncevolution/se-curl-fix.c");
        let out = run(Command::new("gcc")
            .args(["-O2", "-shared", "-fPIC", "-o"])
            .arg(&shim)
            .arg(&source)
            .arg("-ldl"));
        assert!(
            out.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Only the file backend: the others would try to reach EDS over D-Bus.
        let backends = root.join("backends");
        std::fs::create_dir_all(&backends).unwrap();
        let syncfile = ["/usr/lib/x86_64-linux-gnu/syncevolution/backends/syncfile.so"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("syncfile.so of the syncevolution package");
        std::os::unix::fs::symlink(syncfile, backends.join("syncfile.so")).unwrap();
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        SyncEvolution {
            root: root.to_path_buf(),
            data,
            shim,
            backends,
        }
    }

    fn command(&self) -> Command {
        let home = self.root.join("home");
        let mut cmd = Command::new("syncevolution");
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("SYNCEVOLUTION_BACKEND_DIR", &self.backends)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("DISPLAY")
            .stdin(std::process::Stdio::null())
            .arg("--daemon=no");
        cmd
    }

    /// (Re)writes the peer config; the client keeps its anchors and maps.
    pub fn configure(&self, s: &Settings<'_>) {
        let props = [
            format!("syncURL={}", s.url),
            format!("username={}", s.user),
            format!("password={}", s.password),
            "keyring=no".into(),
            format!(
                "deviceId=sc-pim-onebook-{}",
                self.root.file_name().unwrap().to_string_lossy()
            ),
            format!("enableWBXML={}", u8::from(s.wbxml)),
            format!("clientAuthType={}", s.auth),
            format!("maxMsgSize={}", s.max_msg_size),
            format!("SSLServerCertificates={}", s.ca_file.display()),
            "preventSlowSync=0".into(),
            // Refresh from server as a real Alert 205, not wipe + slow sync.
            "enableRefreshSync=1".into(),
            "printChanges=0".into(),
            "dumpData=0".into(),
            "RetryInterval=0".into(),
            "RetryDuration=60".into(),
            format!("logdir={}", self.root.join("logs").display()),
            "maxlogdirs=20".into(),
            "backend=file".into(),
            format!("database=file://{}", self.data.display()),
            "databaseFormat=text/vcard".into(),
            format!("uri={}", s.uri),
            "sync=two-way".into(),
        ];
        let out = run(self
            .command()
            .args(["--configure", "--template", "none"])
            .args(&props)
            .args([PEER, DATASTORE]));
        assert!(
            out.status.success(),
            "syncevolution --configure: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One sync (`slow`, `two-way`, …) with the curl shim preloaded.
    pub fn sync(&self, mode: &str) -> Outcome {
        let out = run(self
            .command()
            .env("LD_PRELOAD", &self.shim)
            .args(["--sync", mode, PEER, DATASTORE]));
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Outcome {
            exit: out.status.code().unwrap_or(-1),
            stats: self.latest_status(),
            output,
        }
    }

    /// `status.ini` of the newest session log directory.
    fn latest_status(&self) -> HashMap<String, String> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.root.join("logs"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        dirs.retain(|d| d.join("status.ini").exists());
        dirs.sort_by_key(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok());
        let Some(dir) = dirs.last() else {
            return HashMap::new();
        };
        std::fs::read_to_string(dir.join("status.ini"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }
}
