//! Test support: a fresh PostgreSQL database per test.

/// A new PostgreSQL database on `HERALD_TEST_POSTGRES_URL`'s server, as a store URL.
/// `None` (with the reason printed) outside CI when the variable is not set; in CI its
/// absence fails the test.
pub async fn fresh_postgres() -> Option<String> {
    let Ok(admin) = std::env::var("HERALD_TEST_POSTGRES_URL") else {
        if std::env::var_os("CI").is_some() {
            panic!("HERALD_TEST_POSTGRES_URL is not set: CI must run the PostgreSQL tests (scripts/postgres start; export HERALD_TEST_POSTGRES_URL=$(scripts/postgres url))");
        }
        eprintln!("SKIPPED: HERALD_TEST_POSTGRES_URL is not set and CI is not set");
        return None;
    };
    let name = herald_testkit::unique("herald_tracker").replace(['.', '-'], "_").to_lowercase();
    let create = name.clone();
    let admin2 = admin.clone();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&admin2, postgres::NoTls).unwrap_or_else(|e| panic!("cannot connect to {admin2}: {e}"));
        client.batch_execute(&format!("CREATE DATABASE {create}")).unwrap_or_else(|e| panic!("CREATE DATABASE {create}: {e}"));
    })
    .await
    .expect("create database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    Some(format!("{base}/{name}"))
}
