//! The command line of a projection program, and the stop point it asks for.

use std::collections::BTreeMap;

use clap::Parser;

use super::AppError;
use crate::runner::StopAt;
use crate::store;

/// A projection program: keeps a read view of a topic up to date in a store, serving
/// /health, /metrics and /status; or, with --rebuild, --until-*, --rollback, rebuilds,
/// time-travels or rolls back the view, and exits.
//
// (Plain text: clap prints the doc comment as the program's --help. The module docs say
// more.)
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// Topic to project (default: the program's).
    #[arg(long)]
    pub topic: Option<String>,
    /// Consumer group (default: the projection's name).
    #[arg(long)]
    pub group: Option<String>,
    /// The view store: sqlite:PATH or postgres://... (default: sqlite:NAME.db, NAME being
    /// the projection's name). A password here shows in the process list: prefer
    /// HERALD_STORE_URL or --store-file.
    #[arg(long, env = "HERALD_STORE_URL", hide_env_values = true)]
    pub store: Option<store::StoreUrl>,
    /// A file holding the store URL (for example a mounted secret); wins over --store.
    #[arg(long, value_name = "PATH")]
    pub store_file: Option<std::path::PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Address for /health, /metrics, /status and the program's routes.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http: String,
    /// Most events per transaction.
    #[arg(long, default_value_t = 1000)]
    pub max_batch: usize,
    /// What to do with poison events: dead-letter or pause.
    #[arg(long, value_enum, default_value_t = PoisonArg::DeadLetter)]
    pub on_poison: PoisonArg,
    /// Attempts before a failing event is poison.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// Extra librdkafka consumer property, key=value (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    /// How long the group waits for a member that stopped answering (killed, frozen)
    /// before its partitions move on, e.g. 10s (`session.timeout.ms`; librdkafka's default
    /// is 45 s; `-X session.timeout.ms=...` wins).
    #[arg(long, default_value = "10s", value_parser = herald_ops::parse_duration)]
    pub session_timeout: std::time::Duration,
    /// Rebuild the view from the beginning of the log into a new version, swap it in, exit.
    #[arg(long, conflicts_with_all = ["rollback", "until_time", "until_offsets"])]
    pub rebuild: bool,
    /// Time travel: build a new version up to this time (RFC 3339), keep it beside the
    /// live one, exit.
    #[arg(long, conflicts_with_all = ["rollback", "until_offsets"])]
    pub until_time: Option<String>,
    /// Time travel: build a new version up to these offsets (`partition:offset,...`,
    /// exclusive; an offset not written yet is waited for), keep it beside the live one, exit.
    #[arg(long, conflicts_with = "rollback")]
    pub until_offsets: Option<String>,
    /// Make the previous version live again, exit.
    #[arg(long)]
    pub rollback: bool,
    /// Show a progress bar (events/s, ETA) on stderr while rebuilding.
    #[arg(long)]
    pub progress: bool,
    /// The service registry the running program registers in (`--no-register`,
    /// `--registry-topic`, `--advertise`).
    #[command(flatten)]
    pub registry: herald_services::announce::AnnounceArgs,
}

/// `--on-poison`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoisonArg {
    /// Dead-letter the event (`<topic>.dlq`) and go on (`OnPoison::DeadLetter`).
    DeadLetter,
    /// Pause its partition until an operator retries or skips it over HTTP
    /// (`OnPoison::Pause`).
    Pause,
}

/// The stop point of `--until-time` / `--until-offsets`, if given.
pub(super) fn until(args: &Args) -> Result<Option<StopAt>, AppError> {
    if let Some(t) = &args.until_time {
        let t = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| AppError::Usage(format!("--until-time expects RFC 3339 ({e}): {t:?}")))?;
        return Ok(Some(StopAt::Before(t.timestamp_millis())));
    }
    let Some(offsets) = &args.until_offsets else { return Ok(None) };
    let bad = || AppError::Usage(format!("--until-offsets expects partition:offset,..., got {offsets:?}"));
    let mut map = BTreeMap::new();
    for pair in offsets.split(',') {
        let (p, o) = pair.split_once(':').ok_or_else(bad)?;
        let (p, o): (i32, i64) = (p.trim().parse().map_err(|_| bad())?, o.trim().parse().map_err(|_| bad())?);
        if p < 0 || o < 0 {
            return Err(bad());
        }
        map.insert(p, o);
    }
    Ok(Some(StopAt::Offsets(map)))
}


#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["prog"].iter().chain(extra))
    }

    #[test]
    fn time_travel_flags_parse_into_stop_points() {
        let args = parse(&["--until-offsets", "0:10, 2:7"]).expect("parses");
        assert_eq!(until(&args).expect("valid"), Some(StopAt::Offsets(BTreeMap::from([(0, 10), (2, 7)]))));
        let args = parse(&["--until-time", "2026-01-02T03:04:05Z"]).expect("parses");
        assert_eq!(until(&args).expect("valid"), Some(StopAt::Before(1_767_323_045_000)));
        for malformed in ["0=10", "0:-5", "-1:3"] {
            let args = parse(&[&format!("--until-offsets={malformed}")]).expect("parses");
            assert!(matches!(until(&args), Err(AppError::Usage(m)) if m.contains("partition:offset")), "{malformed}");
        }
        assert_eq!(until(&parse(&[]).expect("parses")).expect("valid"), None);
    }

    #[test]
    fn modes_exclude_each_other() {
        assert!(parse(&["--rebuild", "--rollback"]).is_err());
        assert!(parse(&["--until-time", "2026-01-02T03:04:05Z", "--until-offsets", "0:1"]).is_err());
        assert!(parse(&["--rebuild", "--progress", "--store", "sqlite:x.db"]).is_ok());
    }
}
