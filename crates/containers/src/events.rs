//! What happened to containers and volumes (`docker events`): the last events in memory for
//! `since`, and a broadcast for followers. A follower takes the history and its subscription
//! under one lock, so it sees every event once. Events are not kept across restarts (as in
//! dockerd, whose event log is in memory too).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::broadcast;

/// How many past events `since` can reach back over.
const HISTORY: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub time: SystemTime,
    /// `container` or `volume`.
    pub kind: &'static str,
    /// Docker's action: `create`, `start`, `die`, `stop`, `kill`, `destroy`, `rename`, ...
    pub action: String,
    /// The container's id or the volume's name.
    pub id: String,
    /// For containers: `name`, `image`, the labels, and per action `exitCode`, `signal`, `oldName`.
    pub attributes: BTreeMap<String, String>,
}

pub struct Events {
    history: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events { history: Mutex::new(VecDeque::with_capacity(HISTORY)), live: broadcast::channel(HISTORY).0 }
    }
}

impl Events {
    pub fn publish(&self, event: Event) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        let _ = self.live.send(event);
    }

    /// The remembered events from `since` on, and the ones that follow.
    pub fn subscribe(&self, since: Option<SystemTime>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let past = match since {
            Some(since) => history.iter().filter(|e| e.time >= since).cloned().collect(),
            None => Vec::new(),
        };
        (past, self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(action: &str, time: SystemTime) -> Event {
        Event { time, kind: "container", action: action.into(), id: "c".into(), attributes: BTreeMap::new() }
    }

    #[test]
    fn since_replays_history_then_the_live_stream_follows() {
        let events = Events::default();
        let t0 = SystemTime::UNIX_EPOCH;
        events.publish(event("create", t0 + std::time::Duration::from_secs(1)));
        events.publish(event("start", t0 + std::time::Duration::from_secs(2)));
        let (past, mut live) = events.subscribe(Some(t0 + std::time::Duration::from_secs(2)));
        assert_eq!(past.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), vec!["start"]);
        assert!(events.subscribe(None).0.is_empty());
        events.publish(event("die", t0 + std::time::Duration::from_secs(3)));
        assert_eq!(live.try_recv().unwrap().action, "die");
        for i in 0..HISTORY + 5 {
            events.publish(event(&i.to_string(), t0));
        }
        assert_eq!(events.subscribe(Some(t0)).0.len(), HISTORY);
    }
}
