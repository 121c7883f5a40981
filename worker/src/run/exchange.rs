//! The worker's exchanges with the coordinator within one assignment: downloading a state
//! version, computing and uploading a training contribution (header, then the summed gradient
//! in chunks), and computing and reporting predictions.
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecg_proto::v1;
use ecg_shared::shm::Segment;
use ecg_shared::wire::{F32Assembler, f32_chunks};
use tonic::Status;

use super::{Worker, append};
use crate::Error;
use crate::client::Client;
use crate::trainer::Compute;

impl Worker {
    pub(super) async fn download(
        &mut self,
        client: &mut Client,
        run_id: &str,
        id: u64,
        version: u64,
        compute: &Arc<std::sync::Mutex<Compute>>,
    ) -> Result<Duration, Option<Status>> {
        let started = Instant::now();
        let mut stream = client
            .get_state(v1::StateRequest {
                run_id: run_id.to_string(),
                worker_id: id,
                version,
                shared_memory: self.shared.is_some(),
            })
            .await
            .map_err(Some)?
            .into_inner();
        let n = compute.lock().map_err(|_| None)?.n_params();
        // Into the buffer of the last state installed, overwritten in place.
        let spare = std::mem::take(&mut self.spare);
        let mut asm = F32Assembler::new(n, spare, "state download");
        let (mut running, mut tracked) = (Vec::new(), Vec::new());
        while let Some(c) = stream.message().await.map_err(Some)? {
            if c.version != version || c.n_params != n as u64 {
                return Err(None);
            }
            if !c.bn_running.is_empty() {
                running = c.bn_running;
                tracked = c.bn_batches_tracked;
            }
            if c.shared_len == 0 {
                asm.push(c.offset, &c.data).map_err(|_| None)?;
            } else {
                // Through shared memory: only a worker given the parameter segment asks for
                // that. A chunk rewritten meanwhile (for a newer version) is a reason to ask
                // NextWork again.
                let seg = &self.shared.as_ref().ok_or(None)?.parameters;
                let region = c.shared_region as usize;
                asm.push_with(c.offset, c.shared_len as usize, |to| {
                    seg.read(region, c.offset, to, c.shared_sum)
                })
                .map_err(|e| Some(Status::aborted(e.to_string())))?;
            }
            ecg_shared::faults::point("worker.download");
        }
        let params = asm.finish().map_err(|_| None)?;
        let received = started.elapsed();
        if let Some(dir) = &self.args.dump_states {
            let bytes: Vec<u8> = params.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(dir.join(format!("v{version}.f32")), bytes))
                .map_err(|e| Some(Status::internal(format!("--dump-states: {e}"))))?;
        }
        let compute = Arc::clone(compute);
        self.spare = tokio::task::spawn_blocking(move || {
            compute
                .lock()
                .map_err(|_| ())
                .and_then(|mut c| c.apply_state(&params, &running, &tracked).map_err(|_| ()))
                .map(|()| params)
        })
        .await
        .map_err(|_| None)?
        .map_err(|()| None)?;
        self.version = version;
        Ok(received)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn train(
        &mut self,
        client: &mut Client,
        run_id: &str,
        id: u64,
        t: v1::TrainWork,
        compute: &Arc<std::sync::Mutex<Compute>>,
        wait_ms: f64,
        download_ms: f64,
    ) -> Result<(), Status> {
        let started = Instant::now();
        let c = Arc::clone(compute);
        let units = t.units.clone();
        let result = tokio::task::spawn_blocking(move || {
            c.lock()
                .map_err(|_| Error::Protocol("the computation panicked".into()))
                .and_then(|c| c.train(&units))
        })
        .await
        .map_err(|e| Status::internal(format!("computation: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let compute_ms = started.elapsed().as_secs_f64() * 1e3;
        let upload = Instant::now();
        let header = v1::GradientHeader {
            run_id: run_id.to_string(),
            worker_id: id,
            step: t.step,
            n_values: (result.grad.len() / 4) as u64,
            units: result.units,
        };
        let mut msgs = vec![v1::GradientUpload {
            header: Some(header),
            ..Default::default()
        }];
        for (offset, data) in f32_chunks(result.grad, self.chunk_bytes) {
            msgs.push(v1::GradientUpload {
                header: None,
                offset,
                data,
                ..Default::default()
            });
        }
        // Through shared memory, each chunk is written there as its message leaves; not when
        // the coordinator may still read an earlier upload of this step there.
        let segment = self
            .shared
            .as_mut()
            .and_then(|s| s.take_for(t.step).then(|| Arc::clone(&s.upload)));
        // The messages are made on a thread of their own (writing a chunk to shared memory
        // is a copy of up to a MiB) and handed to the call as they are made, so that the
        // coordinator reduces chunk j while chunk j + 1 is written. (Made by the call's own
        // stream on this worker's one runtime thread, every chunk was written before the first
        // frame left.) The fault point lies between the header and the first data chunk: the
        // upload has begun, its data has not left.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            for (i, m) in msgs.into_iter().enumerate() {
                if i == 1 {
                    ecg_shared::faults::point("worker.upload");
                }
                let m = match &segment {
                    Some(seg) if !m.data.is_empty() => shared_chunk(seg, m),
                    _ => m,
                };
                if tx.blocking_send(m).is_err() {
                    // The call ended (failed or abandoned).
                    return;
                }
            }
        });
        let msgs = tokio_stream::wrappers::ReceiverStream::new(rx);
        // The state this step makes is downloaded while the upload goes on: the coordinator
        // sums and applies Adam chunk by chunk as the uploads arrive and streams the new
        // parameters as they are made; they are installed once the step has committed. When
        // that cannot be (units of the step wait for a worker, or the reduction started over),
        // NextWork says what to do and the state is downloaded then.
        let mut down_client = client.clone();
        let uploading = async move {
            client.push_gradients(msgs).await?;
            ecg_shared::faults::point("worker.uploaded");
            Ok::<_, Status>(upload.elapsed())
        };
        let (uploaded, downloaded) = {
            let downloading = self.download(&mut down_client, run_id, id, t.step + 1, compute);
            tokio::pin!(uploading, downloading);
            let mut downloaded = None;
            let uploaded = loop {
                tokio::select! {
                    up = &mut uploading => break up?,
                    down = &mut downloading, if downloaded.is_none() => downloaded = Some(down),
                }
            };
            let downloaded = match downloaded {
                Some(d) => d,
                None => downloading.await,
            };
            (uploaded, downloaded)
        };
        let upload_ms = uploaded.as_secs_f64() * 1e3;
        // The download's time beyond the upload's (the reduction's tail and the last chunks).
        let download_ms = match downloaded {
            Ok(_) => download_ms + (upload.elapsed().as_secs_f64() * 1e3 - upload_ms).max(0.0),
            Err(why) => {
                tracing::debug!(
                    "state version {} not taken during the reduction: {}",
                    t.step + 1,
                    why.map_or_else(|| "malformed".to_string(), |s| s.message().to_string())
                );
                download_ms
            }
        };
        let exams: usize = t.units.iter().map(|u| u.exam_ids.len()).sum();
        if let Some(p) = &self.args.exam_log {
            let mut text = String::new();
            for u in &t.units {
                for e in &u.exam_ids {
                    text.push_str(&format!("{},{},{e}\n", t.epoch, t.step));
                }
            }
            append(p, &text).map_err(|e| Status::internal(e.to_string()))?;
        }
        if let Some(p) = &self.args.step_log {
            let line = format!(
                "{},{},{exams},{compute_ms:.3},{upload_ms:.3},{wait_ms:.3},{download_ms:.3}\n",
                t.step,
                t.units.len()
            );
            append(p, &line).map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(())
    }

    pub(super) async fn predict(
        &mut self,
        client: &mut Client,
        run_id: &str,
        id: u64,
        p: v1::PredictWork,
        compute: &Arc<std::sync::Mutex<Compute>>,
    ) -> Result<(), Status> {
        let c = Arc::clone(compute);
        let ids = p.exam_ids.clone();
        let pred = tokio::task::spawn_blocking(move || {
            c.lock()
                .map_err(|_| Error::Protocol("the computation panicked".into()))
                .and_then(|c| c.predict(&ids))
        })
        .await
        .map_err(|e| Status::internal(format!("computation: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))?;
        ecg_shared::faults::point("worker.predict");
        client
            .report_predictions(v1::Predictions {
                run_id: run_id.to_string(),
                worker_id: id,
                task: p.task,
                exam_ids: p.exam_ids,
                predicted_age: pred,
            })
            .await?;
        ecg_shared::faults::point("worker.reported");
        Ok(())
    }
}

/// `m`'s chunk written to the upload region, the message carrying its length and checksum
/// instead (or `m` as it is, should the chunk not fit the region).
fn shared_chunk(seg: &Segment, m: v1::GradientUpload) -> v1::GradientUpload {
    match seg.write(0, m.offset, &m.data) {
        Ok(sum) => v1::GradientUpload {
            header: None,
            offset: m.offset,
            data: Default::default(),
            shared_len: m.data.len() as u32,
            shared_sum: sum,
        },
        Err(e) => {
            tracing::warn!("{e}; the chunk goes over gRPC");
            m
        }
    }
}
