//! The connection to PostgreSQL over TLS, as managed databases require: the URL's
//! `sslmode=verify-full` and `sslrootcert` (libpq's parameters) make berth check the server's
//! certificate against that CA and its name, and refuse a server it cannot verify.

use berth::config::DatabaseConfig;
use reqwest::StatusCode;

use crate::common::*;

fn with_url(url: String) -> DatabaseConfig {
    DatabaseConfig::Postgres {
        url,
        max_connections: 4,
    }
}

#[tokio::test]
async fn the_database_connection_can_require_a_verified_tls_server() {
    let Some(DatabaseConfig::Postgres { url, .. }) = pg_database() else {
        return;
    };
    let Some(ca) = started("TEST_PG_CA") else {
        return;
    };
    let name = url.rsplit_once('/').unwrap().1.to_string();
    let tls = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let s = TestServer::start_with(|c| c.database = with_url(tls.clone())).await;
    let (_, digest) = s.push_image("team/app", "v1", 2).await;
    let resp = s.get("/v2/team/app/manifests/v1").send().await.unwrap();
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(header(&resp, "Docker-Content-Digest"), digest);

    // Every connection the server holds to its database is encrypted.
    let admin = started("TEST_PG_URL").unwrap();
    let counts = psql(
        &admin,
        &format!(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{name}'"
        ),
    );
    let (encrypted, all) = counts.split_once('|').unwrap();
    assert!(all.parse::<u32>().unwrap() > 0, "{counts}");
    assert_eq!(encrypted, all, "encrypted of all connections");

    // A CA that did not sign the server's certificate: the server is refused, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let cfg = berth::config::Config {
        data_dir: dir.path().join("data"),
        database: with_url(format!(
            "{url}?sslmode=verify-full&sslrootcert={}",
            other_ca.display()
        )),
        ..Default::default()
    };
    let err = match berth::server::open_metadata(&cfg).await {
        Ok(_) => panic!("a server signed by another CA was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
