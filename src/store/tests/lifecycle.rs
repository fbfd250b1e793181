//! Opening and settings: consumer cursors, schema versions, configured metrics, refused
//! settings.

use super::*;
use crate::metrics::Metrics;

#[test]
fn consumer_cursors_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let c = {
        let s = EventStore::open(&path, Config::default()).unwrap();
        s.append(ev("a", 1)).unwrap();
        let c = s.head_cursor().unwrap();
        assert_eq!(s.load_cursor("php").unwrap(), None);
        s.commit_cursor("php", &c).unwrap();
        assert!(s.commit_cursor("", &c).is_err());
        c
    };
    let s = EventStore::open(&path, Config::default()).unwrap();
    assert_eq!(s.load_cursor("php").unwrap(), Some(c));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    drop(EventStore::open(&path, Config::default()).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(c);
    let err = EventStore::open(&path, Config::default()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::SchemaTooNew);
}

#[test]
fn configured_metrics_record_appends_fetches_and_waits_but_not_bad_input_as_errors() {
    use crate::metrics::MetricsConfig;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let metrics = Arc::new(Metrics::open(&db, MetricsConfig::default()).unwrap());
    let cfg = Config {
        metrics: Some(metrics.clone()),
        ..Config::default()
    };
    let s = EventStore::open(&db, cfg).unwrap();
    s.append(ev("message_create", 1)).unwrap();
    s.append_batch(vec![ev("message_create", 1), ev("reaction_update", 2)])
        .unwrap();
    assert!(s.append(ev("Bad!", 1)).is_err());
    let b = s.fetch(&FetchRequest::new([1, 2])).unwrap();
    assert_eq!(b.events.len(), 3);
    let empty = s
        .wait(
            &FetchRequest::new([1, 2]).cursor(b.cursor),
            Duration::from_millis(20),
        )
        .unwrap();
    assert!(empty.events.is_empty());

    // Another handle on the same file (as another process would open it) sees the figures.
    let view = Metrics::open(&db, MetricsConfig::default())
        .unwrap()
        .snapshot();
    let c = |n: &str| view.counters[n].total;
    assert_eq!(c("appends"), 3, "two calls that committed and one refused");
    assert_eq!(c("append_errors"), 0, "bad input is not a store fault");
    assert_eq!(c("fetches"), 1);
    assert_eq!(c("waits"), 1);
    assert_eq!(c("wait_timeouts"), 1);
    assert_eq!(
        view.histograms["append"].count, 2,
        "latency of the committed calls only"
    );
    assert_eq!(view.histograms["fetch"].count, 1);
    assert!(view.histograms["wait"].window.max_us >= 20_000);

    // Without the setting nothing is recorded.
    let dir2 = tempfile::tempdir().unwrap();
    let db2 = dir2.path().join("n.db");
    let quiet = EventStore::open(&db2, Config::default()).unwrap();
    quiet.append(ev("message_create", 1)).unwrap();
    let none = Metrics::open(&db2, MetricsConfig::default())
        .unwrap()
        .snapshot();
    assert_eq!(none.counters["appends"].total, 0);
}

#[test]
fn out_of_range_settings_are_refused_by_name_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg.db");
    let cases: Vec<(Config, &str)> = vec![
        (
            Config {
                max_data_bytes: 1_000_000_000_000_000_000,
                ..Config::default()
            },
            "max_data_bytes must be 1 to 16777216",
        ),
        (
            Config {
                live_tail_window: -5,
                ..Config::default()
            },
            "live_tail_window must be 0 to 9223372036854775807, not -5",
        ),
        (
            Config {
                max_ttl: Duration::from_millis(u64::MAX),
                ..Config::default()
            },
            "max_ttl (ms) must be 1 to 3155760000000",
        ),
        (
            Config {
                purge_chunk: 0,
                ..Config::default()
            },
            "purge_chunk must be 1 to 100000",
        ),
        (
            Config {
                purge_interval: Some(Duration::ZERO),
                ..Config::default()
            },
            "purge_interval (ms) must be 10 to",
        ),
    ];
    for (cfg, says) in cases {
        let e = EventStore::open(&path, cfg).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.to_string().contains(says), "{e}");
    }
    assert!(!path.exists(), "nothing was created");
    assert!(Config::default().validate().is_ok());
}
