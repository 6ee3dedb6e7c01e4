//! One queue's messages and the state machine each goes through: delayed, visible, in flight,
//! deleted (or moved to a dead-letter queue, or expired). Pure: no store, no clock of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::attributes::{self, RedrivePolicy};
use crate::storage::Record;
use crate::{QueueId, Received};

/// How many recent message events each queue keeps for inspection.
const TRACE_LEN: usize = 50;

pub(crate) struct Queue {
    /// Distinguishes this queue from an earlier one of the same name (store keys, receipt handles).
    pub uid: u64,
    pub id: QueueId,
    pub fifo: bool,
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub created: u64,
    pub modified: u64,
    /// By sequence (send order). Boxed: a B-tree node holds eleven entries and is about half full
    /// when appended to, so inline messages would leave half of it empty.
    pub messages: BTreeMap<u64, Box<Message>>,
    /// (visible at, sequence) of every committed message: what receive scans.
    pub schedule: BTreeSet<(u64, u64)>,
    pub next_seq: u64,
    pub purged_at: Option<u64>,
    /// FIFO: deduplication id -> (expires at, message id, sequence number).
    pub dedup: HashMap<String, (u64, String, String)>,
    /// The same ids by expiry, oldest first, so that expiring them costs no scan.
    pub dedup_expiry: VecDeque<(u64, String)>,
    /// Messages deleted inside their deduplication window, whose ids the store keeps
    /// (`sqs/dedup/...`) so that the window survives a restart.
    pub dedup_records: HashSet<u64>,
    /// FIFO: ReceiveRequestAttemptId -> (expires at, what that receive returned).
    pub attempts: HashMap<String, (u64, Vec<Received>)>,
    /// The latest message events, oldest first, for `/_stratus/sqs`.
    pub recent: VecDeque<Trace>,
    /// Set by DeleteQueue: requests that got hold of the queue before then must not write to it.
    pub deleted: bool,
    /// No message here was sent before this (a lower bound; `u64::MAX` when there were none), so
    /// retention sweeps skip the queue until its oldest message can have expired.
    pub oldest_sent_ms: u64,
    /// The oldest sent time among the messages added since the running sweep began.
    pub added_during_sweep: u64,
}

/// One step of a message's path through Stratus.
#[derive(Clone, Debug)]
pub struct Trace {
    pub at_ms: u64,
    pub message_id: String,
    /// `sent`, `received`, `deleted`, `expired`, `purged`, `dead-lettered`, `moved`, `arrived`.
    pub event: &'static str,
    /// The other queue, for moves.
    pub peer: Option<String>,
}

pub(crate) struct Message {
    pub seq: u64,
    /// Id, body, attributes and the rest of what its send fixed, as stored.
    pub record: Record,
    pub sent_ms: u64,
    pub receive_count: u32,
    pub first_receive_ms: Option<u64>,
    /// When the latest receive was (0 if unknown: stored before this was kept): its handle may
    /// keep the message hidden for 12 hours from then, no longer.
    pub received_ms: u64,
    pub visible_at_ms: u64,
    /// Incremented on each receive; a receipt handle names the token it was issued with.
    pub token: u64,
    /// Also in the record; here too because FIFO receives read every queued message's.
    pub group_id: Option<String>,
    /// Sent but not yet durable: not receivable, and (FIFO) blocks its group.
    pub pending: bool,
}

/// What happened to one message chosen by a receive.
pub(crate) enum Taken {
    Delivered(u64),
    /// Past maxReceiveCount: leaves for the dead-letter queue.
    DeadLettered(Box<Message>),
    Expired(u64),
}

impl Queue {
    pub fn attribute_u64(&self, name: &str) -> u64 {
        self.attributes.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// FIFO: a send without a deduplication id takes the body's hash.
    pub fn content_based_deduplication(&self) -> bool {
        self.attributes.get("ContentBasedDeduplication").and_then(|v| attributes::bool_value(v)) == Some(true)
    }

    pub fn redrive_policy(&self) -> Option<RedrivePolicy> {
        self.attributes.get("RedrivePolicy").and_then(|p| attributes::redrive_policy(p).ok())
    }

    /// Deduplication ids are unique per queue, or per group with `DeduplicationScope=messageGroup`.
    /// Remembers a deduplication id until `expires`.
    pub fn remember_dedup(&mut self, key: String, expires: u64, message_id: String, sequence_number: String) {
        self.dedup_expiry.push_back((expires, key.clone()));
        self.dedup.insert(key, (expires, message_id, sequence_number));
    }

    /// Forgets the deduplication ids whose window has passed; returns the messages whose stored
    /// ids (see `dedup_records`) can go too.
    pub fn expire_dedup(&mut self, now: u64) -> Vec<u64> {
        let mut stale = Vec::new();
        while self.dedup_expiry.front().is_some_and(|(expires, _)| *expires <= now) {
            if let Some((expires, key)) = self.dedup_expiry.pop_front()
                && self.dedup.get(&key).is_some_and(|(e, _, _)| *e == expires)
                && let Some((_, _, sequence_number)) = self.dedup.remove(&key)
                && let Ok(seq) = sequence_number.parse::<u64>()
                && self.dedup_records.remove(&seq)
            {
                stale.push(seq);
            }
        }
        stale
    }

    pub fn dedup_key(&self, group: Option<&str>, dedup_id: &str) -> String {
        match self.attributes.get("DeduplicationScope").map(String::as_str) {
            Some("messageGroup") => format!("{}\n{dedup_id}", group.unwrap_or("")),
            _ => dedup_id.to_string(),
        }
    }

    pub fn arn(&self) -> String {
        self.id.arn()
    }

    pub fn trace(&mut self, at_ms: u64, message_id: impl Into<String>, event: &'static str, peer: Option<String>) {
        if self.recent.len() == TRACE_LEN {
            self.recent.pop_front();
        }
        self.recent.push_back(Trace { at_ms, message_id: message_id.into(), event, peer });
    }

    /// What an earlier receive with this attempt id returned, if every message of it is still in
    /// flight from that receive (its receipt handle the latest); their visibility timeout starts
    /// again, as SQS documents. Like the attempt ids, that restart is not stored: after a restart
    /// the first receive's deadline holds.
    pub fn repeat_attempt(&mut self, attempt: &str, now: u64, visibility_ms: u64) -> Option<Vec<Received>> {
        let (_, earlier) = self.attempts.get(attempt).filter(|(expires, _)| *expires > now)?;
        let seqs: Vec<u64> = earlier
            .iter()
            .map(|r| {
                let (seq, token) = crate::receipt_for(self, &r.receipt_handle).ok()?;
                let message = self.messages.get(&seq)?;
                (message.token == token && message.visible_at_ms > now).then_some(seq)
            })
            .collect::<Option<_>>()?;
        let earlier = earlier.clone();
        for seq in seqs {
            self.set_visible_at(seq, now + visibility_ms);
        }
        Some(earlier)
    }

    /// Removes and returns up to `max` visible messages, oldest visibility first (message moves).
    pub fn drain_visible(&mut self, max: usize, now: u64) -> Vec<Message> {
        let seqs = self.choose_standard(max, now);
        seqs.into_iter().filter_map(|seq| self.remove(seq)).map(|m| *m).collect()
    }

    /// Whether a message can be past the retention period: a sweep has nothing to do until then.
    pub fn may_have_expired(&self, now: u64) -> bool {
        now.saturating_sub(self.oldest_sent_ms) >= self.attribute_u64("MessageRetentionPeriod") * 1000
    }

    /// One part of a retention sweep: the messages past the retention period among the first `max`
    /// from sequence `from` on, the sequence the next part starts at (`None` at the end), and the
    /// oldest sent time of the others. By parts, so that a sweep of a deep queue holds its lock for
    /// a fraction of a millisecond at a time. Sent times do not follow send order (a dead-letter
    /// queue keeps each message's original one), so every message is looked at.
    pub fn expired(&self, now: u64, from: u64, max: usize) -> (Vec<u64>, Option<u64>, u64) {
        let retention_ms = self.attribute_u64("MessageRetentionPeriod") * 1000;
        let mut messages = self.messages.range(from..);
        let (mut expired, mut oldest_kept) = (Vec::new(), u64::MAX);
        for (seq, message) in messages.by_ref().take(max) {
            if !message.pending && now.saturating_sub(message.sent_ms) >= retention_ms {
                expired.push(*seq);
            } else {
                oldest_kept = oldest_kept.min(message.sent_ms);
            }
        }
        (expired, messages.next().map(|(seq, _)| *seq), oldest_kept)
    }

    /// FIFO: the queue's delay holds every message not yet received, counted from its send, even a
    /// delay set after it was sent (for FIFO queues SQS applies a new delay to queued messages).
    /// Derived, not stored: called when the delay changes and when the queue is loaded.
    pub fn apply_fifo_delay(&mut self) {
        let delay_ms = self.attribute_u64("DelaySeconds") * 1000;
        let due: Vec<(u64, u64)> =
            self.messages.values().filter(|m| m.receive_count == 0).map(|m| (m.seq, m.sent_ms + delay_ms)).collect();
        for (seq, at) in due {
            self.set_visible_at(seq, at);
        }
    }

    /// Adds a message that is being made durable; `commit` makes it receivable.
    pub fn add_pending(&mut self, message: impl Into<Box<Message>>) {
        let message = message.into();
        self.oldest_sent_ms = self.oldest_sent_ms.min(message.sent_ms);
        self.added_during_sweep = self.added_during_sweep.min(message.sent_ms);
        self.messages.insert(message.seq, message);
    }

    pub fn commit(&mut self, seq: u64) {
        if let Some(message) = self.messages.get_mut(&seq) {
            message.pending = false;
            self.schedule.insert((message.visible_at_ms, seq));
        }
    }

    pub fn remove(&mut self, seq: u64) -> Option<Box<Message>> {
        let message = self.messages.remove(&seq)?;
        self.schedule.remove(&(message.visible_at_ms, seq));
        Some(message)
    }

    pub fn set_visible_at(&mut self, seq: u64, at: u64) {
        if let Some(message) = self.messages.get_mut(&seq) {
            if !message.pending {
                self.schedule.remove(&(message.visible_at_ms, seq));
                self.schedule.insert((at, seq));
            }
            message.visible_at_ms = at;
        }
    }

    /// Chooses up to `max` messages to hand out now, and marks the delivered ones in flight until
    /// `now + visibility_ms`. Expired and dead-lettered messages are removed from the queue.
    /// `max_receives` is the redrive policy's limit, when its dead-letter queue exists.
    pub fn take(&mut self, max: usize, now: u64, visibility_ms: u64, max_receives: Option<u32>) -> Vec<Taken> {
        let retention_ms = self.attribute_u64("MessageRetentionPeriod") * 1000;
        let chosen = if self.fifo { self.choose_fifo(max, now) } else { self.choose_standard(max, now) };
        let mut taken = Vec::with_capacity(chosen.len());
        for seq in chosen {
            let Some(message) = self.messages.get(&seq) else { continue };
            if now.saturating_sub(message.sent_ms) >= retention_ms {
                self.remove(seq);
                taken.push(Taken::Expired(seq));
            } else if max_receives.is_some_and(|max| message.receive_count >= max) {
                if let Some(message) = self.remove(seq) {
                    taken.push(Taken::DeadLettered(message));
                }
            } else {
                self.set_visible_at(seq, now + visibility_ms);
                if let Some(message) = self.messages.get_mut(&seq) {
                    message.receive_count += 1;
                    message.first_receive_ms.get_or_insert(now);
                    message.received_ms = now;
                    message.token += 1;
                }
                taken.push(Taken::Delivered(seq));
            }
        }
        taken
    }

    /// Any visible messages, oldest visibility first.
    fn choose_standard(&self, max: usize, now: u64) -> Vec<u64> {
        self.schedule.iter().take_while(|(at, _)| *at <= now).take(max).map(|(_, seq)| *seq).collect()
    }

    /// In send order, each group's messages before its first that is pending or not visible (in
    /// flight or delayed), which holds back the rest: first as many as possible of the first
    /// available group, then of the next ones. So SQS was recorded answering: of three messages
    /// received together, the second's timeout extended, the first comes back alone.
    fn choose_fifo(&self, max: usize, now: u64) -> Vec<u64> {
        fn group(m: &Message) -> &str {
            m.group_id.as_deref().unwrap_or("")
        }
        let mut held = HashSet::new();
        let available: Vec<(&str, u64)> = self
            .messages
            .values()
            .filter(|m| {
                let visible = !m.pending && m.visible_at_ms <= now;
                if !visible {
                    held.insert(group(m));
                }
                visible && !held.contains(group(m))
            })
            .map(|m| (group(m), m.seq))
            .collect();
        let Some(&(first_group, _)) = available.first() else { return Vec::new() };
        let (mut chosen, others): (Vec<_>, Vec<_>) = available.into_iter().partition(|(g, _)| *g == first_group);
        chosen.extend(others);
        chosen.into_iter().take(max).map(|(_, seq)| seq).collect()
    }

    /// (visible, in flight, delayed)
    /// (visible, in flight, delayed). Only the messages not visible now are looked at, through
    /// the schedule: a deep queue of waiting messages costs nothing to count.
    pub fn counts(&self, now: u64) -> (u64, u64, u64) {
        let (mut in_flight, mut delayed) = (0, 0);
        for (_, seq) in self.schedule.range((now.saturating_add(1), 0)..) {
            match self.messages.get(seq) {
                Some(message) if message.receive_count > 0 => in_flight += 1,
                Some(_) => delayed += 1,
                None => {}
            }
        }
        (self.messages.len() as u64 - in_flight - delayed, in_flight, delayed)
    }

    /// The earliest moment a message not visible now becomes visible, if any.
    pub fn next_visible_after(&self, now: u64) -> Option<u64> {
        self.schedule.range((now + 1, 0)..).next().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoredMessage;

    fn queue(fifo: bool) -> Queue {
        let id = QueueId { account: "000000000000".into(), region: "us-east-1".into(), name: "q".into() };
        Queue {
            uid: 1,
            id,
            fifo,
            attributes: attributes::defaults(fifo),
            tags: BTreeMap::new(),
            created: 0,
            modified: 0,
            messages: BTreeMap::new(),
            schedule: BTreeSet::new(),
            next_seq: 1,
            purged_at: None,
            dedup: HashMap::new(),
            dedup_expiry: VecDeque::new(),
            dedup_records: HashSet::new(),
            attempts: HashMap::new(),
            recent: VecDeque::new(),
            deleted: false,
            oldest_sent_ms: u64::MAX,
            added_during_sweep: u64::MAX,
        }
    }

    #[test]
    fn deduplication_ids_expire_in_order_without_a_scan() {
        let mut q = queue(true);
        q.remember_dedup("a".into(), 10, "m1".into(), "1".into());
        q.remember_dedup("b".into(), 20, "m2".into(), "2".into());
        q.expire_dedup(10);
        assert!(!q.dedup.contains_key("a") && q.dedup.contains_key("b"));
        // An id remembered again (after it expired) keeps its new window when the old entry pops.
        q.remember_dedup("a".into(), 30, "m3".into(), "3".into());
        q.expire_dedup(20);
        assert_eq!(q.dedup.keys().collect::<Vec<_>>(), vec!["a"]);
        q.expire_dedup(30);
        assert!(q.dedup.is_empty() && q.dedup_expiry.is_empty());
    }

    fn send(q: &mut Queue, seq: u64, sent: u64, visible_at: u64, group: Option<&str>) {
        let id = format!("m{seq}");
        q.add_pending(Message {
            seq,
            record: Record::new(&StoredMessage { id: &id, sent_ms: sent, group_id: group, ..Default::default() }),
            sent_ms: sent,
            receive_count: 0,
            first_receive_ms: None,
            received_ms: 0,
            visible_at_ms: visible_at,
            token: 0,
            group_id: group.map(String::from),
            pending: true,
        });
        q.commit(seq);
    }

    #[test]
    fn an_expiry_sweep_by_parts_finds_every_expired_message() {
        let mut q = queue(false);
        q.attributes.insert("MessageRetentionPeriod".into(), "60".into());
        // Sent times out of send order, as in a dead-letter queue.
        for (seq, sent) in [(1, 50_000), (2, 0), (3, 70_000), (4, 1_000), (5, 0)] {
            send(&mut q, seq, sent, 0, None);
        }
        assert!(!q.may_have_expired(59_999) && q.may_have_expired(60_000));
        let (mut expired, mut from, mut oldest_kept) = (Vec::new(), Some(0), u64::MAX);
        while let Some(start) = from {
            let (part, next, oldest) = q.expired(61_000, start, 2);
            assert!(part.len() <= 2);
            expired.extend(part);
            (from, oldest_kept) = (next, oldest_kept.min(oldest));
        }
        assert_eq!((expired, oldest_kept), (vec![2, 4, 5], 50_000));
    }

    fn delivered(taken: &[Taken]) -> Vec<u64> {
        taken.iter().filter_map(|t| if let Taken::Delivered(s) = t { Some(*s) } else { None }).collect()
    }

    #[test]
    fn visibility_delay_and_counts() {
        let mut q = queue(false);
        send(&mut q, 1, 1000, 1000, None);
        send(&mut q, 2, 1000, 5000, None); // delayed
        assert_eq!(q.counts(1000), (1, 0, 1));
        assert_eq!(delivered(&q.take(10, 1000, 30_000, None)), vec![1]);
        assert_eq!(q.counts(1000), (0, 1, 1));
        assert!(delivered(&q.take(10, 2000, 30_000, None)).is_empty(), "in flight and delayed");
        assert_eq!(q.next_visible_after(2000), Some(5000));
        assert_eq!(delivered(&q.take(10, 31_000, 30_000, None)), vec![2, 1], "the delayed one became visible first");
        assert_eq!(q.messages[&1].receive_count, 2);
        assert_eq!(q.messages[&1].first_receive_ms, Some(1000));
    }

    #[test]
    fn pending_messages_are_not_received() {
        let mut q = queue(false);
        send(&mut q, 1, 0, 0, None);
        q.messages.get_mut(&1).unwrap().pending = true;
        q.schedule.clear();
        assert!(q.take(10, 0, 1000, None).is_empty());
    }

    #[test]
    fn retention_and_dead_letters() {
        let mut q = queue(false);
        q.attributes.insert("MessageRetentionPeriod".into(), "60".into());
        send(&mut q, 1, 0, 0, None);
        send(&mut q, 2, 50_000, 50_000, None);
        let taken = q.take(10, 60_000, 0, Some(1));
        assert!(matches!(taken[0], Taken::Expired(1)));
        assert_eq!(delivered(&taken), vec![2]);
        assert!(matches!(q.take(10, 60_001, 0, Some(1)).as_slice(), [Taken::DeadLettered(m)] if m.seq == 2));
        assert!(q.messages.is_empty());
    }

    #[test]
    fn fifo_groups_deliver_in_order_one_batch_at_a_time() {
        let mut q = queue(true);
        send(&mut q, 1, 0, 0, Some("a"));
        send(&mut q, 2, 0, 0, Some("b"));
        send(&mut q, 3, 0, 0, Some("a"));
        assert_eq!(delivered(&q.take(2, 0, 1000, None)), vec![1, 3], "the first group first");
        assert_eq!(delivered(&q.take(10, 0, 1000, None)), vec![2], "group a is in flight");
        assert!(q.take(10, 0, 1000, None).is_empty());
        q.remove(1);
        assert!(q.take(10, 0, 1000, None).is_empty(), "3 is still in flight");
        assert_eq!(
            delivered(&q.take(10, 1000, 1000, None)),
            vec![2, 3],
            "visibility expired: both groups again, in send order"
        );
    }

    #[test]
    fn a_fifo_group_delivers_up_to_its_first_message_not_visible() {
        let mut q = queue(true);
        for seq in 1..=3 {
            send(&mut q, seq, 0, 0, Some("a"));
        }
        assert_eq!(delivered(&q.take(10, 0, 1000, None)), vec![1, 2, 3]);
        q.set_visible_at(2, 5000); // the second's timeout extended
        assert_eq!(delivered(&q.take(10, 1000, 1000, None)), vec![1], "the first, but not the third behind the second");
        // A delayed message holds back those sent after it, not those before.
        let mut q = queue(true);
        send(&mut q, 1, 0, 0, Some("b"));
        send(&mut q, 2, 0, 2000, Some("b"));
        send(&mut q, 3, 0, 0, Some("b"));
        assert_eq!(delivered(&q.take(10, 0, 1000, None)), vec![1]);
    }
}
