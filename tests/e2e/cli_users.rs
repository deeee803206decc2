//! `berth user ...` against a data dir, with and without a server running on it.

use crate::common::berth_cli as berth;

#[test]
fn user_lifecycle_on_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, out, _) = berth(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--admin",
            "--data-dir",
            d,
        ],
        Some("pw-1\n"),
    );
    assert!(ok);
    assert!(out.contains("added user alice (admin)"), "{out}");
    let (ok, _, err) = berth(
        &["user", "add", "alice", "--password-stdin", "--data-dir", d],
        Some("x\n"),
    );
    assert!(!ok);
    assert!(err.contains("user alice already exists"), "{err}");
    let (ok, _, err) = berth(
        &["user", "add", "bob", "--password-stdin", "--data-dir", d],
        Some(""),
    );
    assert!(!ok);
    assert!(err.contains("no password on standard input"), "{err}");
    let (ok, _, err) = berth(
        &[
            "user",
            "add",
            "bad:name",
            "--password-stdin",
            "--data-dir",
            d,
        ],
        Some("x\n"),
    );
    assert!(!ok);
    assert!(err.contains("invalid user name"), "{err}");
    let (ok, _, _) = berth(
        &["user", "add", "bob", "--password-stdin", "--data-dir", d],
        Some("pw-b\n"),
    );
    assert!(ok);
    let (ok, out, _) = berth(&["user", "list", "--data-dir", d], None);
    assert!(ok);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].starts_with("alice") && rows[0].contains("yes"),
        "{out}"
    );
    assert!(
        rows[1].starts_with("bob") && rows[1].contains("no"),
        "{out}"
    );
    assert!(!out.contains("pw-"), "no secret is ever printed");
    let (ok, _, _) = berth(
        &["user", "passwd", "bob", "--password-stdin", "--data-dir", d],
        Some("pw-b2\n"),
    );
    assert!(ok);
    let (ok, _, err) = berth(
        &[
            "user",
            "passwd",
            "carol",
            "--password-stdin",
            "--data-dir",
            d,
        ],
        Some("x\n"),
    );
    assert!(!ok);
    assert!(err.contains("no user named carol"), "{err}");
    let (ok, _, _) = berth(&["user", "del", "bob", "--data-dir", d], None);
    assert!(ok);
    let (ok, _, err) = berth(&["user", "del", "bob", "--data-dir", d], None);
    assert!(!ok);
    assert!(err.contains("no user named bob"), "{err}");
}

#[test]
fn htpasswd_import_accepts_bcrypt_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let hash = bcrypt::hash("secret", 4).unwrap();
    let good = dir.path().join("good.htpasswd");
    std::fs::write(&good, format!("# users\nann:{hash}\nben:{hash}\n")).unwrap();
    let (ok, out, _) = berth(
        &[
            "user",
            "import-htpasswd",
            good.to_str().unwrap(),
            "--data-dir",
            d,
        ],
        None,
    );
    assert!(ok);
    assert!(out.contains("2 added, 0 replaced, 0 kept"), "{out}");
    let md5 = dir.path().join("md5.htpasswd");
    std::fs::write(&md5, "cat:$apr1$abc$0123456789abcdefghijkl\n").unwrap();
    let (ok, _, err) = berth(
        &[
            "user",
            "import-htpasswd",
            md5.to_str().unwrap(),
            "--data-dir",
            d,
        ],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains("line 1") && err.contains("htpasswd -B"),
        "{err}"
    );
}

#[test]
fn users_can_be_managed_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (mut server, _) = crate::common::spawn_serve(&["--data-dir", d]);
    let (ok, _, err) = berth(
        &["user", "add", "dana", "--password-stdin", "--data-dir", d],
        Some("pw\n"),
    );
    assert!(ok, "{err}");
    let (ok, out, _) = berth(&["user", "list", "--data-dir", d], None);
    assert!(ok && out.contains("dana"), "{out}");
    server.kill().unwrap();
    server.wait().unwrap();
}
