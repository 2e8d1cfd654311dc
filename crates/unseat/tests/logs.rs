//! The binary's log lines on stderr: text by default, one JSON object per line with
//! `UNSEAT_LOG_FORMAT=json` (for a log pipeline), a clear error for any other format.

use serde_json::Value;
use std::process::{Command, Output};

fn unseat(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unseat"));
    cmd.args(args).env_remove("UNSEAT_LOG_FORMAT").env_remove("UNSEAT_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run unseat")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

#[test]
fn json_logs_are_one_object_per_line() {
    let url = unseat_store::testing::new_database_url();
    let name = url.rsplit('/').next().unwrap().to_string();
    let out = unseat(&["migrate"], &[("UNSEAT_DATABASE_URL", &url), ("UNSEAT_LOG_FORMAT", "json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = stderr_lines(&out);
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}")))
        .collect();
    let created = events
        .iter()
        .find(|e| e["fields"]["message"] == "database created")
        .unwrap_or_else(|| panic!("no 'database created' event in {lines:?}"));
    assert_eq!(created["level"], "INFO");
    assert_eq!(created["fields"]["database"], name.as_str());
    assert!(created["timestamp"].is_string() && created["target"].is_string(), "{created}");
    assert!(events.iter().any(|e| e["fields"]["message"] == "migrations applied"), "{lines:?}");
}

#[test]
fn text_logs_by_default_and_other_formats_refused() {
    let url = unseat_store::testing::new_database_url();
    let out = unseat(&["migrate"], &[("UNSEAT_DATABASE_URL", &url)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = stderr_lines(&out);
    let created = lines.iter().find(|l| l.contains("database created")).expect("a 'database created' line");
    assert!(serde_json::from_str::<Value>(created).is_err(), "{created}");
    assert!(created.contains("INFO"), "{created}");

    let out = unseat(&["migrate"], &[("UNSEAT_DATABASE_URL", &url), ("UNSEAT_LOG_FORMAT", "xml")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'xml'") && err.contains("text, json"), "{err}");
}

/// A filter that does not parse is refused before anything runs, not replaced by `info`; a
/// quieter filter than `info` quiets the database driver as well. Lines written to a pipe carry
/// no terminal colour codes.
#[test]
fn a_log_filter_is_checked_and_followed() {
    let url = unseat_store::testing::new_database_url();
    let out = unseat(&["migrate"], &[("UNSEAT_DATABASE_URL", &url), ("UNSEAT_LOG", "error,unseat=verbose")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a log filter"), "{err}");
    let out = unseat(&["migrate"], &[("UNSEAT_DATABASE_URL", &url)]);
    assert!(
        out.status.success(),
        "nothing was migrated under the refused filter: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stderr_lines(&out).iter().any(|l| l.contains("database created")), "the database was created now");
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'), "colour codes in piped logs");

    let out = unseat(&["migrate"], &[("UNSEAT_DATABASE_URL", &url), ("UNSEAT_LOG", "warn")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = stderr_lines(&out);
    assert!(lines.iter().all(|l| !l.contains("INFO")), "info lines under a warn filter: {lines:?}");
    // A migrated database migrates again without the server's notices in the log.
    let out = unseat(&["migrate"], &[("UNSEAT_DATABASE_URL", &url)]);
    let lines = stderr_lines(&out);
    assert!(lines.iter().all(|l| !l.contains("NOTICE")), "{lines:?}");
}

/// `admin encrypt-credential` takes its key from `--credential-key` as well as from the
/// environment, as its help says.
#[test]
fn encrypt_credential_takes_the_key_flag() {
    use std::io::Write;
    let key = "ab".repeat(32);
    let mut child = Command::new(env!("CARGO_BIN_EXE_unseat"))
        .args(["admin", "encrypt-credential", "--credential-key", &key])
        .env_remove("UNSEAT_CREDENTIAL_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run unseat");
    child.stdin.take().expect("stdin").write_all(b"app-secret\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sealed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!sealed.contains("app-secret"), "{sealed}");
    let parsed = unseat_store::credentials::CredentialKey::parse(&key).expect("key");
    let plain = unseat_store::credentials::resolve_using(&sealed, Some(&parsed)).expect("decrypts with the key");
    assert_eq!(plain, "app-secret");
}
