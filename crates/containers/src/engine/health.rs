//! Running health checks: while a container with a check runs, a task probes it at the check's
//! interval with an exec (the same path as `docker exec`), records each probe in the container's
//! `State.health` and publishes `health_status: <status>` when the status changes. The task
//! ends when the container stops (its exit aborts it) or is removed.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::exec::ExecRequest;
use super::{Engine, Entry, Status};
use crate::error::{Error, Result};
use crate::health::{self, Health, HealthConfig, HealthStatus, Probe};

/// How long a probe that timed out may take to end after SIGKILL before it is left behind.
const KILLED_PROBE_GRACE: Duration = Duration::from_secs(5);

impl Engine {
    /// Starts probing a container that has just started, if it has a check. Its health is then
    /// `starting`, with the log of its earlier runs kept (as in Docker).
    pub(super) fn start_health_checks(&self, entry: &Arc<Entry>) {
        let container = entry.snapshot();
        let Some(check) = container.healthcheck.clone() else { return };
        let Some(command) = check.probe_command(&container.shell()) else { return };
        let Some(started) = container.state.started_at else { return };
        {
            let mut c = entry.container.lock().unwrap_or_else(|p| p.into_inner());
            let health = c.state.health.get_or_insert_with(Health::default);
            health.status = HealthStatus::Starting;
            health.failing_streak = 0;
        }
        let task = tokio::spawn(monitor(self.this.clone(), entry.clone(), check, command, started));
        let previous = entry.health_checks.lock().unwrap_or_else(|p| p.into_inner()).replace(task.abort_handle());
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    pub(super) fn stop_health_checks(&self, entry: &Entry) {
        if let Some(task) = entry.health_checks.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// Runs one probe; a probe that cannot run is a failure with the reason as its output.
    async fn probe(&self, id: &str, command: &[String], timeout: Duration) -> Probe {
        let start = SystemTime::now();
        let (exit_code, output) = match self.run_probe(id, command, timeout).await {
            Ok(result) => result,
            Err(error) => (-1, error.to_string()),
        };
        Probe { start, end: SystemTime::now(), exit_code, output }
    }

    async fn run_probe(&self, id: &str, command: &[String], timeout: Duration) -> Result<(i32, String)> {
        let request =
            ExecRequest { cmd: command.to_vec(), attach_stdout: true, attach_stderr: true, ..ExecRequest::default() };
        let exec_id = self.exec_create(id, request)?;
        let result = self.run_probe_exec(id, &exec_id, timeout).await;
        self.forget_exec(&exec_id);
        result
    }

    async fn run_probe_exec(&self, id: &str, exec_id: &str, timeout: Duration) -> Result<(i32, String)> {
        let mut io = self.exec_start(exec_id, false, None).await?;
        let mut output = Vec::new();
        let collect = async {
            // The stream ends once the exit is recorded.
            while let Some(entry) = io.output.recv().await {
                let room = health::MAX_OUTPUT.saturating_sub(output.len());
                output.extend_from_slice(entry.bytes.get(..room).unwrap_or(&entry.bytes));
            }
        };
        let ended = tokio::time::timeout(timeout, collect).await.is_ok();
        let code = self.exec_inspect(exec_id)?.exit_code;
        // A probe that exited counts by its code even if a child it left behind still holds its
        // output open.
        if let (false, None) = (ended, code) {
            let runtime = self.runtime.as_ref().ok_or(Error::NotRoot)?;
            runtime.kill_exec(id, exec_id, 9).await?;
            let _ = tokio::time::timeout(KILLED_PROBE_GRACE, async { while io.output.recv().await.is_some() {} }).await;
            return Ok((-1, format!("Health check exceeded timeout ({})", health::go_duration(timeout))));
        }
        Ok((code.unwrap_or(-1), String::from_utf8_lossy(&output).into_owned()))
    }
}

/// Probes a container at its check's intervals for as long as this run of it lasts.
async fn monitor(
    engine: Weak<Engine>,
    entry: Arc<Entry>,
    check: HealthConfig,
    command: Vec<String>,
    started: SystemTime,
) {
    loop {
        let status = health_status(&entry);
        let since_start = started.elapsed().unwrap_or_default();
        tokio::time::sleep(check.next_interval(since_start, status)).await;
        let container = entry.snapshot();
        if container.state.status != Status::Running || container.state.started_at != Some(started) {
            return;
        }
        let Some(engine) = engine.upgrade() else { return };
        let probe = engine.probe(&container.id, &command, check.timeout()).await;
        let in_start_period = probe.start.duration_since(started).unwrap_or_default() < check.start_period;
        let changed = {
            let mut c = entry.container.lock().unwrap_or_else(|p| p.into_inner());
            let health = c.state.health.get_or_insert_with(Health::default);
            health.record(probe, check.retries(), in_start_period).then_some(health.status)
        };
        if let Some(status) = changed {
            tracing::info!(container = %container.id, status = status.as_str(), "health changed");
            engine.container_event(&entry.snapshot(), &format!("health_status: {}", status.as_str()), &[]);
        }
    }
}

fn health_status(entry: &Entry) -> HealthStatus {
    entry.snapshot().state.health.map(|h| h.status).unwrap_or_default()
}
