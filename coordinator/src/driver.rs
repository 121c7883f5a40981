//! The run itself, on its own thread: wait for `min_workers`, then for every epoch publish its
//! steps one after another, wait until each step's units are all done, reduce and apply Adam
//! and publish the new state; then share the validation among the workers, log the epoch and
//! checkpoint; at the end predict the test split with the best state, tell the workers the
//! run is over and return.
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecg_proto::BEST_VERSION;
use ecg_proto::v1::PredictPhase;
use ecg_shared::model::load_checkpoint;
use ecg_shared::train::audit;
use ecg_shared::train::history::write_atomic;
use ecg_shared::train::local::{TrainEvent, files};

use crate::Result;
use crate::core::{Phase, PredictRound, StepWork};
use crate::error::Refusal;
use crate::hub::Hub;
use crate::plan::EpochPlan;
use crate::reduce::Job;
use crate::reduce::chunk::ChunkOutcome;
use crate::snapshot::Snapshot;
use crate::trainer::{TestFigures, Trainer};

/// Why training stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// All `training.epochs` epochs ran.
    Epochs(u64),
    /// The learning rate fell below `training.min_lr` (the seed's stop rule).
    MinLr(f64),
    /// `training.max_steps` steps were done: the run is paused, not over.
    MaxSteps(u64),
    /// Stopped by SIGTERM or Ctrl-C after this many steps: the run is paused, not over.
    Stopped(u64),
    /// A coordinator started again on a run that had finished (the reason it gave then).
    AlreadyFinished(String),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Epochs(n) => write!(f, "{n} epochs done"),
            Ending::MinLr(lr) => write!(f, "the learning rate {lr:e} fell below min_lr"),
            Ending::MaxSteps(n) => write!(
                f,
                "stopped after max_steps = {n} steps (run again with a larger max_steps to go on)"
            ),
            Ending::AlreadyFinished(why) => write!(f, "the run had already finished: {why}"),
            Ending::Stopped(n) => write!(
                f,
                "stopped by a signal after {n} steps, checkpointed (start the coordinator again with the same configuration to go on)"
            ),
        }
    }
}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Why it stopped.
    pub reason: Ending,
    /// Test figures, when the test split was predicted.
    pub test: Option<TestFigures>,
    /// Steps committed in all.
    pub global_step: u64,
    /// Best epoch and its validation loss.
    pub best: Option<(u64, f64)>,
    /// Median time a step spent summing gradients and applying Adam (chunk by chunk, while the
    /// uploads were still arriving), in seconds.
    pub median_reduce_seconds: Option<f64>,
    /// Median time of a whole step (publication of its work to publication of its result:
    /// the workers' downloads, computation and uploads, and the reduction), in seconds.
    pub median_step_seconds: Option<f64>,
    /// State downloads: streamed while their step was reduced, of a committed version, and
    /// ended early (filled in by the server).
    pub downloads: Option<[u64; 3]>,
    /// Bytes of gradient and of parameter chunks passed through shared memory (filled in by
    /// the server).
    pub shared_memory_bytes: Option<[u64; 2]>,
}

/// Runs the training loop over `hub` with `trainer`, reporting through `on_event`.
pub fn drive(
    hub: &Arc<Hub>,
    mut trainer: Trainer,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<RunOutcome> {
    let c = trainer.cfg.cluster.clone();
    let tick = Duration::from_millis(c.heartbeat_ms.max(10));
    if trainer.best_epoch.is_some() {
        let best = load_checkpoint(&trainer.cfg.output.dir.join(files::BEST))?
            .build(&ecg_shared::model::Device::Cpu)?;
        let chunk_bytes = trainer.cfg.cluster.chunk_bytes();
        let snap = Snapshot::new(BEST_VERSION, best.params_flat()?, &best, chunk_bytes, false);
        hub.lock().best = Some(Arc::new(snap));
    }
    if let Some(why) = finished_before(&trainer) {
        println!(
            "run {} had already finished ({why}): nothing to do",
            trainer.run_id
        );
        finish(hub, tick, &why);
        return Ok(outcome(
            &trainer,
            Ending::AlreadyFinished(why),
            None,
            Vec::new(),
            Vec::new(),
        ));
    }
    println!("waiting for {} worker(s)", c.min_workers);
    hub.wait_for(tick, |core| {
        (core.members.len() >= c.min_workers || hub.stopping()).then_some(())
    });
    ecg_shared::faults::point("coord.listening");
    let max_steps = trainer.cfg.training.max_steps;
    let mut ending = None;
    let mut reduce_times = Vec::new();
    let mut step_times = Vec::new();
    'epochs: while trainer.run_epoch() {
        let lr = trainer.begin_epoch()?;
        let epoch = trainer.epoch;
        let plan = EpochPlan::new(
            &trainer.cfg,
            &trainer.data.index,
            &trainer.data.train,
            epoch,
        );
        on_event(TrainEvent::EpochStart {
            epoch,
            steps: plan.len(),
            lr,
        });
        hub.facts.metrics.epoch_state(epoch, lr);
        while (trainer.step_in_epoch as usize) < plan.len() {
            if max_steps > 0 && trainer.global_step >= max_steps {
                ending = Some(Ending::MaxSteps(max_steps));
                break 'epochs;
            }
            if hub.stopping() {
                ending = Some(Ending::Stopped(trainer.global_step));
                break 'epochs;
            }
            let units = trainer.work_units(&plan.units(trainer.step_in_epoch as usize));
            let started = Instant::now();
            trainer.begin_step();
            {
                let mut core = hub.lock();
                let workers = core.members.len();
                let n = hub.facts.n_params;
                core.step = Some(StepWork::new(
                    epoch,
                    trainer.global_step,
                    units,
                    workers,
                    n,
                    c.chunk_bytes(),
                ));
                core.phase = Phase::Training;
                core.progress.epoch = epoch;
                core.progress.step_in_epoch = trainer.step_in_epoch;
                core.progress.steps_in_epoch = plan.len() as u64;
                core.progress.lr = lr;
            }
            hub.bump();
            ecg_shared::faults::point("coord.step");
            let Some((mut step, reduce_secs)) = reduce_step(hub, tick, &mut trainer)? else {
                ending = Some(Ending::Stopped(trainer.global_step));
                break 'epochs;
            };
            ecg_shared::faults::point("coord.reduce");
            reduce_times.push(reduce_secs);
            let exam_digest = audit::digest(step.delivered_exams());
            let n_contributions = step.contributions.len() as u64;
            let (step_number, step_in_epoch) = (trainer.global_step, trainer.step_in_epoch);
            let generation = step.reduction.generation();
            let chunks = step.reduction.take_reduced();
            let done = trainer.commit(&step.contributions, &chunks)?;
            ecg_shared::faults::point("coord.commit");
            let snap = Snapshot::from_chunks(
                trainer.global_step,
                hub.facts.n_params,
                chunks,
                &trainer.model,
                c.chunk_bytes(),
            );
            let loss = done.loss_sum / done.exams.max(1) as f64;
            audit::append(
                &trainer.cfg.output.dir,
                &audit::Commit {
                    run_id: trainer.run_id.clone(),
                    global_step: step_number,
                    epoch,
                    step_in_epoch,
                    exams: done.exams,
                    exam_digest,
                    contributions: n_contributions,
                    loss_sum: done.loss_sum,
                    unix_ms: unix_ms(),
                },
            )?;
            {
                let mut core = hub.lock();
                core.snapshot = Arc::new(snap);
                core.snapshot_generation = generation;
                core.progress.step_in_epoch = trainer.step_in_epoch;
                core.progress.last_train_loss = loss;
            }
            hub.bump();
            step_times.push(started.elapsed().as_secs_f64());
            hub.facts.metrics.step_committed(
                trainer.global_step,
                done.exams,
                loss,
                started.elapsed().as_secs_f64(),
                reduce_secs,
            );
            if c.checkpoint_every_steps > 0
                && trainer.global_step.is_multiple_of(c.checkpoint_every_steps)
            {
                trainer.save_state()?;
                ecg_shared::faults::point("coord.checkpointed");
            }
            on_event(TrainEvent::Step {
                done: trainer.step_in_epoch as usize,
                train_loss: trainer.epoch_loss_sum / trainer.epoch_seen.max(1) as f64,
            });
        }
        on_event(TrainEvent::Validating {
            exams: trainer.data.valid.len(),
        });
        let version = hub.lock().version();
        let tasks = trainer.tasks(&trainer.data.valid);
        let Some(pred) = predict(
            hub,
            tick,
            PredictPhase::Valid,
            version,
            tasks,
            Phase::Validating,
        ) else {
            ending = Some(Ending::Stopped(trainer.global_step));
            break;
        };
        let v = trainer.finish_epoch(&pred, lr)?;
        ecg_shared::faults::point("coord.epoch_end");
        hub.facts
            .metrics
            .validation(v.row.epoch, v.row.valid_loss, v.row.metrics.mae);
        if v.improved {
            let mut core = hub.lock();
            core.best = Some(best_snapshot(&trainer));
            core.progress.best_valid_loss = v.row.valid_loss;
        }
        trainer.save_state()?;
        if v.stop {
            on_event(TrainEvent::Stopped {
                epoch: v.row.epoch,
                lr,
            });
            ending = Some(Ending::MinLr(lr));
            break;
        }
        on_event(TrainEvent::EpochEnd(v.row));
    }
    let reason = ending.unwrap_or(Ending::Epochs(trainer.epoch));
    let paused = matches!(reason, Ending::MaxSteps(_) | Ending::Stopped(_));
    if paused {
        trainer.save_state()?;
    }
    let mut test = None;
    if !paused && !trainer.data.test.is_empty() {
        {
            // Without a validated best (no epoch finished), the test uses the last state.
            let mut core = hub.lock();
            if core.best.is_none() {
                core.best = Some(best_snapshot(&trainer));
            }
        }
        let tasks = trainer.tasks(&trainer.data.test);
        ecg_shared::faults::point("coord.test");
        if let Some(pred) = predict(
            hub,
            tick,
            PredictPhase::Test,
            BEST_VERSION,
            tasks,
            Phase::Testing,
        ) {
            test = Some(trainer.finish_test(&pred)?);
        }
    }
    // Stopped during the test predictions: the run is trained and saved; the test split is
    // predicted when the coordinator starts again.
    let test_abandoned = !paused && !trainer.data.test.is_empty() && test.is_none();
    if matches!(reason, Ending::Stopped(_)) || test_abandoned {
        return Ok(stopped(&trainer, reduce_times, step_times));
    }
    ecg_shared::faults::point("coord.finish");
    if !paused {
        let kind = if matches!(reason, Ending::MinLr(_)) {
            "min_lr"
        } else {
            "epochs"
        };
        write_atomic(
            &trainer.cfg.output.dir.join(FINISHED_FILE),
            format!("{kind}\n{reason}\n").as_bytes(),
        )?;
    }
    finish(hub, tick, &reason.to_string());
    Ok(outcome(&trainer, reason, test, reduce_times, step_times))
}

/// The current state as the best one (with its bytes: the test split is predicted over gRPC
/// too).
fn best_snapshot(trainer: &Trainer) -> Arc<Snapshot> {
    Arc::new(Snapshot::new(
        BEST_VERSION,
        trainer.params().to_vec(),
        &trainer.model,
        trainer.cfg.cluster.chunk_bytes(),
        false,
    ))
}

/// What the driver does next within a step.
enum Next {
    /// Reduce these chunks (consecutive).
    Reduce(Vec<Job>),
    /// Every unit is done and every chunk reduced: commit.
    Commit(Box<StepWork>),
    /// A stop was asked for and the step did not complete in time.
    Abandon,
}

/// Reduces the step under way chunk by chunk as its uploads arrive (see [`crate::reduce`]),
/// and takes it once it is complete, with the seconds spent reducing; `None` when a stop was
/// asked for and the step did not complete within one worker timeout after it (the step is
/// abandoned: its contributions are dropped, the state stays that of the last committed step).
fn reduce_step(
    hub: &Arc<Hub>,
    tick: Duration,
    trainer: &mut Trainer,
) -> Result<Option<(StepWork, f64)>> {
    let mut stop_since: Option<Instant> = None;
    let mut reducing = Duration::ZERO;
    // Whether the new parameters are made as bytes (for downloads over gRPC) and with their
    // checksums (for the parameter segment's readers), by who is a member now; a worker
    // joining later gets the versions made after it joined.
    let (bytes, sums) = {
        let core = hub.lock();
        let grpc = core.members.values().filter(|m| m.needs_bytes).count();
        (
            grpc > 0 || core.members.is_empty(),
            grpc < core.members.len(),
        )
    };
    // Chunks reduced at once, one a thread.
    let reducers = rayon::current_num_threads().max(1);
    loop {
        let next = hub.wait_for(tick, |core| {
            if let Some(s) = &core.step {
                if s.complete() && s.reduction.done() {
                    return core.step.take().map(|s| Next::Commit(Box::new(s)));
                }
                let jobs = s.reduction.jobs(reducers);
                if !jobs.is_empty() {
                    return Some(Next::Reduce(jobs));
                }
            }
            if hub.stopping() {
                let since = *stop_since.get_or_insert_with(Instant::now);
                if core.members.is_empty() || since.elapsed() >= hub.facts.worker_timeout {
                    core.step = None;
                    return Some(Next::Abandon);
                }
            }
            None
        });
        let jobs = match next {
            Next::Reduce(jobs) => jobs,
            Next::Commit(step) => return Ok(Some((*step, reducing.as_secs_f64()))),
            Next::Abandon => {
                hub.facts.metrics.fault("aborted_step");
                println!(
                    "the step under way was abandoned: it will be done again after the restart"
                );
                return Ok(None);
            }
        };
        let started = Instant::now();
        let reduced = trainer.reduce_chunks(&jobs, bytes, sums);
        reducing += started.elapsed();
        {
            let mut core = hub.lock();
            let Some(s) = core.step.as_mut() else {
                continue;
            };
            let generation = jobs.first().map(|j| j.generation);
            let current = s.reduction.generation() == generation.unwrap_or(u64::MAX);
            match reduced {
                Ok(outcomes) => {
                    for (job, outcome) in jobs.iter().zip(outcomes) {
                        match outcome {
                            ChunkOutcome::Reduced(chunk) => {
                                s.reduction.publish(job.generation, job.index, chunk);
                            }
                            // An upload whose piece became non-finite after its check is
                            // refused, even if it was accepted: its units are done again.
                            ChunkOutcome::Rewritten { key, why }
                                if s.reduction.generation() == job.generation =>
                            {
                                if let Some(w) = s.reject(key) {
                                    let r = Refusal::BadUpload(format!("{why}; found when summed"));
                                    hub.facts.metrics.rejected(r.label());
                                    tracing::warn!("step {}: {w}'s upload refused: {r}", s.step);
                                }
                            }
                            ChunkOutcome::Rewritten { .. } => {}
                        }
                    }
                }
                // A sum that is not finite stops the run, unless the uploads it was made of
                // have changed meanwhile.
                Err(e) if current => return Err(e),
                Err(_) => {}
            }
        }
        hub.bump();
    }
}

/// Shares `tasks` among the workers and returns the predictions in task order; `None` when a
/// stop was asked for first (the round is abandoned).
fn predict(
    hub: &Arc<Hub>,
    tick: Duration,
    phase: PredictPhase,
    version: u64,
    tasks: Vec<Vec<i64>>,
    run_phase: Phase,
) -> Option<Vec<f32>> {
    {
        let mut core = hub.lock();
        core.predict = Some(PredictRound::new(phase, version, tasks));
        core.phase = run_phase;
    }
    hub.bump();
    ecg_shared::faults::point("coord.predict");
    let round = hub.wait_for(tick, |core| {
        if core.predict.as_ref().is_some_and(PredictRound::complete) {
            return Some(core.predict.take());
        }
        if hub.stopping() {
            core.predict = None;
            return Some(None);
        }
        None
    })?;
    Some(round.results.into_values().flatten().collect())
}

/// The outcome of a run stopped by a signal (its state was saved).
fn stopped(trainer: &Trainer, reduce_times: Vec<f64>, step_times: Vec<f64>) -> RunOutcome {
    let reason = Ending::Stopped(trainer.global_step);
    outcome(trainer, reason, None, reduce_times, step_times)
}

/// The outcome of a run that ended for `reason`, with the medians of its reduction and step
/// times (the server fills in its own figures).
fn outcome(
    trainer: &Trainer,
    reason: Ending,
    test: Option<TestFigures>,
    mut reduce_times: Vec<f64>,
    mut step_times: Vec<f64>,
) -> RunOutcome {
    RunOutcome {
        reason,
        test,
        global_step: trainer.global_step,
        best: trainer.best_epoch.map(|e| (e, trainer.best)),
        median_reduce_seconds: median(&mut reduce_times),
        median_step_seconds: median(&mut step_times),
        downloads: None,
        shared_memory_bytes: None,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// File in the output folder that marks a finished run: its first line says why training
/// stopped (`epochs` or `min_lr`), the second is the reason as printed.
pub const FINISHED_FILE: &str = "run_finished.txt";

/// Why the run in the output folder had finished, when it had and there is nothing left to
/// train (a run whose `training.epochs` was raised since goes on).
fn finished_before(trainer: &Trainer) -> Option<String> {
    let text = std::fs::read_to_string(trainer.cfg.output.dir.join(FINISHED_FILE)).ok()?;
    let mut lines = text.lines();
    let kind = lines.next()?;
    let why = lines.next().unwrap_or(kind).to_string();
    (kind == "min_lr" || !trainer.run_epoch()).then_some(why)
}

/// Marks the run over and waits (at most one worker timeout) until every worker was told; with
/// `cluster.linger_after_finish`, goes on answering (the run is over) until SIGTERM.
fn finish(hub: &Arc<Hub>, tick: Duration, reason: &str) {
    {
        let mut core = hub.lock();
        core.phase = Phase::Finished;
        core.finish_reason = reason.to_string();
        core.step = None;
        core.predict = None;
    }
    hub.bump();
    if hub.facts.linger_after_finish {
        println!("the run is over; answering until stopped (cluster.linger_after_finish)");
        hub.wait_for(tick, |_| hub.stopping().then_some(()));
        return;
    }
    let until = Instant::now() + hub.facts.worker_timeout;
    hub.wait_for(tick, |core| {
        (core.all_told() || Instant::now() >= until).then_some(())
    });
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}
