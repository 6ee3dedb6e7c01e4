//! Message move tasks (StartMessageMoveTask): moving a dead-letter queue's messages back to the
//! queues they came from, or to a chosen queue, in the background, at an optional rate.
//! Tasks live in memory: after a restart the moved messages are where they were moved, and a
//! task that was running is simply gone (start it again to move the rest).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::{QueueId, Sqs, SqsError, now_ms, storage};

/// Why a task failed when a queue it moves from or to is gone: SQS gives the error's code.
const NO_QUEUE: &str = "AWS.SimpleQueueService.NonExistentQueue";

/// A task handle as SQS makes them: base64 of `{"taskId":...,"sourceArn":...}`, so that a cancel
/// can tell an unknown queue from an unknown task.
fn handle(task_id: &str, source_arn: &str) -> String {
    let (task_id, source_arn) = (serde_json::Value::from(task_id), serde_json::Value::from(source_arn));
    BASE64.encode(format!("{{\"taskId\":{task_id},\"sourceArn\":{source_arn}}}"))
}

/// A handle's (task id, source ARN), if it is one.
fn read_handle(handle: &str) -> Option<(String, String)> {
    let json: serde_json::Value = serde_json::from_slice(&BASE64.decode(handle).ok()?).ok()?;
    Some((json["taskId"].as_str()?.to_string(), json["sourceArn"].as_str()?.to_string()))
}

/// A task as ListMessageMoveTasks reports it.
pub struct MoveTaskView {
    /// Only while the task runs, as in SQS: it is for cancelling.
    pub handle: Option<String>,
    /// RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED.
    pub status: &'static str,
    pub source_arn: String,
    pub destination_arn: Option<String>,
    pub max_per_second: Option<u64>,
    pub moved: u64,
    pub to_move: u64,
    pub failure: Option<String>,
    pub started_ms: u64,
}

pub(crate) struct MoveTask {
    handle: String,
    source: QueueId,
    destination: Option<QueueId>,
    max_per_second: Option<u64>,
    started_ms: u64,
    to_move: u64,
    moved: AtomicU64,
    cancel: AtomicBool,
    status: Mutex<(&'static str, Option<String>)>,
}

impl MoveTask {
    fn status(&self) -> (&'static str, Option<String>) {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
    fn finish(&self, status: &'static str, failure: Option<String>) {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = (status, failure);
    }
}

impl Sqs {
    pub fn start_move_task(
        self: &Arc<Self>,
        source_arn: &str,
        destination_arn: Option<&str>,
        max_per_second: Option<i64>,
    ) -> Result<String, SqsError> {
        let not_found = || {
            SqsError::ResourceNotFound(
                "The resource that you specified for the SourceArn parameter doesn't exist.".into(),
            )
        };
        let source = QueueId::from_arn(source_arn).ok_or_else(not_found)?;
        let cell = self.cell(&source).map_err(|_| not_found())?;
        if self.all_dead_letter_sources(&source)?.is_empty() {
            return Err(SqsError::InvalidParameterValue(
                "Source queue must be configured as a Dead Letter Queue.".into(),
            ));
        }
        let destination = match destination_arn {
            Some(arn) => {
                let id = QueueId::from_arn(arn).filter(|id| self.cell(id).is_ok());
                Some(id.ok_or_else(|| {
                    SqsError::ResourceNotFound(
                        "The resource that you specified for the DestinationArn parameter doesn't exist.".into(),
                    )
                })?)
            }
            None => None,
        };
        if max_per_second.is_some_and(|r| !(1..=500).contains(&r)) {
            return Err(SqsError::InvalidParameterValue(
                "Value for parameter MaxNumberOfMessagesPerSecond is invalid. Reason: Must be between 1 and 500."
                    .into(),
            ));
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if tasks.iter().any(|t| t.source == source && t.status().0 == "RUNNING") {
            return Err(SqsError::InvalidParameterValue(
                "There is already a task running. Only one active task is allowed for a source queue arn at a given time.".into(),
            ));
        }
        let (visible, _, _) = cell.lock().counts(now_ms());
        let task = Arc::new(MoveTask {
            handle: handle(&uuid::Uuid::new_v4().to_string(), &source.arn()),
            source,
            destination,
            max_per_second: max_per_second.map(|r| r as u64),
            started_ms: now_ms(),
            to_move: visible,
            moved: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            status: Mutex::new(("RUNNING", None)),
        });
        tasks.push(task.clone());
        tokio::spawn(run(self.clone(), task.clone()));
        Ok(task.handle.clone())
    }

    pub fn list_move_tasks(&self, source_arn: &str, max_results: Option<usize>) -> Result<Vec<MoveTaskView>, SqsError> {
        let source = QueueId::from_arn(source_arn).filter(|id| self.cell(id).is_ok()).ok_or_else(|| {
            SqsError::ResourceNotFound(
                "The resource that you specified for the SourceArn parameter doesn't exist.".into(),
            )
        })?;
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let views =
            tasks.iter().rev().filter(|t| t.source == source).take(max_results.unwrap_or(1).clamp(1, 10)).map(|t| {
                let (status, failure) = t.status();
                MoveTaskView {
                    handle: (status == "RUNNING").then(|| t.handle.clone()),
                    status,
                    source_arn: t.source.arn(),
                    destination_arn: t.destination.as_ref().map(QueueId::arn),
                    max_per_second: t.max_per_second,
                    moved: t.moved.load(Ordering::Relaxed),
                    to_move: t.to_move,
                    failure,
                    started_ms: t.started_ms,
                }
            });
        Ok(views.collect())
    }

    /// Stops a running task; returns how many messages it had moved.
    pub fn cancel_move_task(&self, handle: &str) -> Result<u64, SqsError> {
        // Not a handle at all is invalid; one naming a queue or a task that does not exist, not found.
        let Some((_, source_arn)) = read_handle(handle) else {
            return Err(SqsError::InvalidParameterValue("Value for parameter TaskHandle is invalid.".into()));
        };
        if QueueId::from_arn(&source_arn).is_none_or(|source| self.cell(&source).is_err()) {
            return Err(SqsError::ResourceNotFound(
                "The resource that you specified for the SourceArn parameter doesn't exist.".into(),
            ));
        }
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let task = tasks
            .iter()
            .find(|t| t.handle == handle)
            .ok_or_else(|| SqsError::ResourceNotFound("Task does not exist.".into()))?;
        if task.status().0 != "RUNNING" {
            return Err(SqsError::InvalidParameterValue("Only active tasks can be cancelled.".into()));
        }
        task.cancel.store(true, Ordering::Relaxed);
        task.finish("CANCELLING", None);
        Ok(task.moved.load(Ordering::Relaxed))
    }
}

async fn run(sqs: Arc<Sqs>, task: Arc<MoveTask>) {
    let (status, failure) = match move_all(&sqs, &task).await {
        Ok(()) if task.cancel.load(Ordering::Relaxed) => ("CANCELLED", None),
        Ok(()) => ("COMPLETED", None),
        Err(why) => ("FAILED", Some(why)),
    };
    task.finish(status, failure);
}

async fn move_all(sqs: &Sqs, task: &MoveTask) -> Result<(), String> {
    let chunk = task.max_per_second.unwrap_or(100).min(100) as usize;
    while !task.cancel.load(Ordering::Relaxed) && task.moved.load(Ordering::Relaxed) < task.to_move {
        let source = sqs.cell(&task.source).map_err(|_| NO_QUEUE.to_string())?;
        let now = now_ms();
        let messages = source.lock().drain_visible(chunk, now);
        if messages.is_empty() {
            return Ok(());
        }
        // Each message goes to the task's destination, or back to the queue it was dead-lettered from.
        let mut groups: BTreeMap<QueueId, Vec<crate::queue::Message>> = BTreeMap::new();
        let mut unplaceable = Vec::new();
        for message in messages {
            let target = task
                .destination
                .clone()
                .or_else(|| message.record.fields().dead_letter_source.and_then(QueueId::from_arn));
            match target.filter(|t| sqs.cell(t).is_ok()) {
                Some(target) => groups.entry(target).or_default().push(message),
                None => unplaceable.push(message),
            }
        }
        if !unplaceable.is_empty() {
            let mut queue = source.lock();
            for message in unplaceable.into_iter().chain(groups.into_values().flatten()) {
                let seq = message.seq;
                queue.add_pending(message);
                queue.commit(seq);
            }
            return Err(NO_QUEUE.into());
        }
        let count: usize = groups.values().map(Vec::len).sum();
        for (target, messages) in groups {
            let Ok(target_cell) = sqs.cell(&target) else { continue };
            let mut ops = Vec::new();
            {
                let mut queue = source.lock();
                for message in &messages {
                    queue.trace(now, message.record.id(), "moved", Some(target.name.clone()));
                    ops.extend(storage::delete_message_ops(queue.uid, message.seq));
                    ops.extend(storage::keep_dedup_op(&mut queue, message, now));
                }
            }
            sqs.transfer(&target_cell, messages, None, ops).await.map_err(|e| match e {
                SqsError::QueueDoesNotExist => NO_QUEUE.to_string(),
                other => other.to_string(),
            })?;
        }
        task.moved.fetch_add(count as u64, Ordering::Relaxed);
        if let Some(rate) = task.max_per_second {
            tokio::time::sleep(Duration::from_secs_f64(count as f64 / rate as f64)).await;
        }
    }
    Ok(())
}
