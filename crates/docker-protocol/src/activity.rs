//! Docker's JSON for what containers do: `docker events` (messages and filters), `docker stats`,
//! `docker top` and `docker container prune`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use containers::events::Event;
use containers::stats::Stats;
use containers::{Container, Engine, Error};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

/// How often `docker stats` (streaming) samples, as dockerd's collector does.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// The gap between the two samples of a one-off `docker stats --no-stream` (its CPU %).
const STATS_GAP: Duration = Duration::from_millis(500);

/// Streams the events `filters` picks: the remembered ones from `since`, then live ones until
/// `until` (if given).
pub async fn stream_events(
    past: Vec<Event>,
    mut live: broadcast::Receiver<Event>,
    filters: EventFilters,
    until: Option<SystemTime>,
    tx: mpsc::Sender<Bytes>,
) {
    let line = |event: &Event| Bytes::from(format!("{}\n", event_json(event)));
    let before_until = |event: &Event| until.is_none_or(|until| event.time <= until);
    for event in past.iter().filter(|e| filters.matches(e) && before_until(e)) {
        if tx.send(line(event)).await.is_err() {
            return;
        }
    }
    let deadline = until.map(|until| until.duration_since(SystemTime::now()).unwrap_or_default());
    let deadline = tokio::time::Instant::now() + deadline.unwrap_or(Duration::from_secs(100 * 365 * 86400));
    loop {
        let event = tokio::select! {
            received = live.recv() => match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tokio::time::sleep_until(deadline) => return,
            () = tx.closed() => return,
        };
        if filters.matches(&event) && before_until(&event) && tx.send(line(&event)).await.is_err() {
            return;
        }
    }
}

/// `docker stats`: one object (two samples apart, for the CPU %), or one a second while the
/// client listens.
pub async fn stream_stats(engine: std::sync::Arc<Engine>, id: String, stream: bool, tx: mpsc::Sender<Bytes>) {
    let mut previous = Stats::default();
    if !stream {
        if let Ok((_, first)) = engine.stats(&id) {
            previous = first;
        }
        tokio::time::sleep(STATS_GAP).await;
    }
    loop {
        let Ok((container, stats)) = engine.stats(&id) else { return };
        let object = Bytes::from(format!("{}\n", stats_json(&container, &stats, &previous)));
        if tx.send(object).await.is_err() || !stream {
            return;
        }
        previous = stats;
        tokio::time::sleep(STATS_INTERVAL).await;
    }
}

/// An event as `GET /events` streams it (one JSON object per line).
pub fn event_json(event: &Event) -> Value {
    let nanos = event.time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut message = json!({
        "Type": event.kind,
        "Action": event.action,
        "Actor": {"ID": event.id, "Attributes": event.attributes},
        "scope": "local",
        "time": nanos.as_secs(),
        "timeNano": nanos.as_nanos() as u64,
    });
    if event.kind == "container" {
        // The fields of API versions before 1.22, which clients still read.
        message["status"] = json!(event.action);
        message["id"] = json!(event.id);
        message["from"] = json!(event.attributes.get("image"));
    }
    message
}

/// `since`/`until` of `GET /events`: Unix seconds, with an optional fraction, as the CLI sends.
pub fn parse_time(text: Option<&str>) -> Result<Option<SystemTime>, Error> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(None) };
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let invalid = || Error::InvalidParameter(format!("invalid timestamp: {text}"));
    let seconds: u64 = seconds.parse().map_err(|_| invalid())?;
    let digits = fraction.get(..fraction.len().min(9)).unwrap_or("0");
    let nanos: u64 = format!("{digits:0<9}").parse().map_err(|_| invalid())?;
    Ok(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos)))
}

/// `GET /events`'s filters: type, event, container, image, volume, label.
pub struct EventFilters(BTreeMap<String, Vec<String>>);

impl EventFilters {
    pub fn parse(text: Option<&str>) -> Result<EventFilters, Error> {
        let keys = ["type", "event", "container", "image", "volume", "label"];
        Ok(EventFilters(crate::json::parse_filters(text, &keys)?))
    }

    pub fn matches(&self, event: &Event) -> bool {
        let name = event.attributes.get("name").map(String::as_str).unwrap_or_default();
        self.0.iter().all(|(key, values)| match key.as_str() {
            "type" => values.iter().any(|v| v == event.kind),
            // As dockerd (moby#25798): naming health_status, exec_create or exec_start also
            // matches their `<action>: <detail>` events, by prefix.
            "event" => {
                let by_prefix =
                    values.iter().any(|v| ["health_status", "exec_create", "exec_start"].contains(&v.as_str()));
                values.iter().any(|v| *v == event.action || (by_prefix && event.action.starts_with(v.as_str())))
            }
            "container" => {
                event.kind == "container" && values.iter().any(|v| v == name || event.id.starts_with(v.as_str()))
            }
            "image" => values.iter().any(|v| event.attributes.get("image") == Some(v)),
            "volume" => event.kind == "volume" && values.contains(&event.id),
            "label" => values.iter().all(|wanted| match wanted.split_once('=') {
                Some((k, v)) => event.attributes.get(k).is_some_and(|have| have == v),
                None => event.attributes.contains_key(wanted),
            }),
            _ => false,
        })
    }
}

fn cpu_json(stats: &Stats) -> Value {
    json!({
        "cpu_usage": {"total_usage": stats.cpu_total_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "system_cpu_usage": stats.system_cpu_ns,
        "online_cpus": stats.online_cpus,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    })
}

/// One `GET /containers/{id}/stats` object; `previous` is the sample before (CPU % is the
/// difference).
pub fn stats_json(container: &Container, stats: &Stats, previous: &Stats) -> Value {
    let time = |t: Option<SystemTime>| {
        t.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |t| humantime::format_rfc3339_nanos(t).to_string())
    };
    json!({
        "id": container.id,
        "name": format!("/{}", container.name),
        "read": time(stats.read),
        "preread": time(previous.read),
        "pids_stats": {"current": stats.pids, "limit": stats.pids_limit},
        "cpu_stats": cpu_json(stats),
        "precpu_stats": cpu_json(previous),
        "memory_stats": {
            "usage": stats.memory_usage,
            "limit": stats.memory_limit,
            "stats": {"total_inactive_file": stats.memory_inactive_file},
        },
        "blkio_stats": {"io_service_bytes_recursive": stats.block_io.iter().map(|b| json!({
            "major": b.major, "minor": b.minor, "op": b.op, "value": b.value,
        })).collect::<Vec<_>>()},
        "networks": stats.networks.iter().map(|(name, i)| (name.clone(), json!({
            "rx_bytes": i.rx_bytes, "rx_packets": i.rx_packets, "rx_errors": i.rx_errors, "rx_dropped": i.rx_dropped,
            "tx_bytes": i.tx_bytes, "tx_packets": i.tx_packets, "tx_errors": i.tx_errors, "tx_dropped": i.tx_dropped,
        }))).collect::<serde_json::Map<_, _>>(),
    })
}

pub fn top_json(titles: &[String], rows: &[Vec<String>]) -> Value {
    json!({"Titles": titles, "Processes": rows})
}

/// `docker container prune`'s filters: `until` (a Unix time or a duration ago) and `label`.
pub fn prune_filter(text: Option<&str>) -> Result<impl Fn(&Container) -> bool, Error> {
    let filters = crate::json::parse_filters(text, &["until", "label", "label!"])?;
    let mut until = None;
    for value in filters.get("until").into_iter().flatten() {
        until = Some(match humantime::parse_duration(value) {
            Ok(ago) => SystemTime::now() - ago,
            Err(_) => parse_time(Some(value))?.unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    let labels = filters.get("label").cloned().unwrap_or_default();
    let not_labels = filters.get("label!").cloned().unwrap_or_default();
    let has = |container: &Container, wanted: &String| match wanted.split_once('=') {
        Some((k, v)) => container.labels.get(k).is_some_and(|have| have == v),
        None => container.labels.contains_key(wanted),
    };
    Ok(move |container: &Container| {
        until.is_none_or(|until| container.created < until)
            && labels.iter().all(|l| has(container, l))
            && !not_labels.iter().any(|l| has(container, l))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_and_filters_parse() {
        let at = parse_time(Some("1700000000.5")).unwrap().unwrap();
        assert_eq!(at.duration_since(SystemTime::UNIX_EPOCH).unwrap(), Duration::from_millis(1_700_000_000_500));
        assert!(parse_time(Some("soon")).is_err());
        assert_eq!(parse_time(None).unwrap(), None);

        let event = Event {
            time: SystemTime::UNIX_EPOCH,
            kind: "container",
            action: "die".into(),
            id: "abcdef".into(),
            attributes: [("name".to_string(), "web".to_string()), ("app".to_string(), "x".to_string())].into(),
        };
        let matches = |f: &str| EventFilters::parse(Some(f)).unwrap().matches(&event);
        assert!(matches(r#"{"container":["web"],"event":["die","start"]}"#));
        assert!(matches(r#"{"container":["abc"],"label":["app=x"],"type":["container"]}"#));
        assert!(!matches(r#"{"event":["start"]}"#) && !matches(r#"{"label":["app=y"]}"#));
        assert!(EventFilters::parse(Some(r#"{"bogus":["x"]}"#)).is_err());
        let exec = Event { action: "exec_create: echo hi".into(), ..event.clone() };
        let exec_matches = |f: &str| EventFilters::parse(Some(f)).unwrap().matches(&exec);
        assert!(exec_matches(r#"{"event":["exec_create"]}"#) && exec_matches(r#"{"event":["exec_create: echo hi"]}"#));
        assert!(!exec_matches(r#"{"event":["exec"]}"#) && !exec_matches(r#"{"event":["exec_start"]}"#));
        let message = event_json(&event);
        assert_eq!((message["Action"].as_str(), message["status"].as_str()), (Some("die"), Some("die")));
    }
}
