//! A fresh database on the shared PostgreSQL server of `scripts/postgres`, for a test's
//! own store.

/// A new database on `HERALD_TEST_POSTGRES_URL`'s server, named after `prefix`, as a store
/// URL. `None` (with the reason printed) outside CI when the variable is not set; in CI its
/// absence fails the test.
///
/// ```no_run
/// # async fn run() {
/// let Some(url) = herald_testkit::fresh_postgres("herald_view").await else { return };
/// # drop(url); }
/// ```
pub async fn fresh_postgres(prefix: &str) -> Option<String> {
    let Ok(admin) = std::env::var("HERALD_TEST_POSTGRES_URL") else {
        if std::env::var_os("CI").is_some() {
            panic!("HERALD_TEST_POSTGRES_URL is not set: CI must run the PostgreSQL tests (scripts/postgres start; export HERALD_TEST_POSTGRES_URL=$(scripts/postgres url))");
        }
        eprintln!("SKIPPED: HERALD_TEST_POSTGRES_URL is not set and CI is not set; run `scripts/postgres start` and export HERALD_TEST_POSTGRES_URL=$(scripts/postgres url) to run the PostgreSQL tests");
        return None;
    };
    let name = crate::unique(prefix).replace(['.', '-'], "_").to_lowercase();
    let (create, server) = (name.clone(), admin.clone());
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&server, postgres::NoTls).unwrap_or_else(|e| panic!("cannot connect to {server}: {e}"));
        client.batch_execute(&format!("CREATE DATABASE {create}")).unwrap_or_else(|e| panic!("CREATE DATABASE {create}: {e}"));
    })
    .await
    .expect("create database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    Some(format!("{base}/{name}"))
}
