//! Running `unseat admin …` as an operator would, against a test's database.

use std::process::{Command, Output};

/// `unseat admin <args>` with `UNSEAT_DATABASE_URL` set to `database_url`.
pub fn admin(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unseat"))
        .arg("admin")
        .args(args)
        .env("UNSEAT_DATABASE_URL", database_url)
        .output()
        .expect("run unseat")
}

/// What the command printed, on both streams.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
