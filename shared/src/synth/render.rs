//! Renders one exam into its HDF5 row: a beat template of the exam is overlap-added at the beat
//! times (with heart-rate variability, respiratory modulation and, in atrial fibrillation,
//! irregular RR and fibrillatory waves), the twelve leads are derived, and per-lead baseline
//! wander and noise are added. The record (2,800 or 4,000 samples) sits in the middle of the
//! 4,096-sample row with zeros on both sides, as in CODE.
use std::f64::consts::TAU;

use rand::Rng;
use rand_distr::StandardNormal;

use super::dipole::{BeatTemplate, N_INDEPENDENT, Vec3, beat_waves, lead_directions, twelve_leads};
use super::physiology::{EcgParams, Rhythm, SAMPLE_RATE_HZ};
use super::rng::{SynthRng, fast_normal};
use super::{N_LEADS, N_SAMPLES};

/// Sinusoids of the baseline wander: respiration and two slower drifts.
const N_WANDER: usize = 3;

/// Scratch buffers for rendering, reused from exam to exam by one thread.
#[derive(Debug, Default)]
pub(crate) struct Renderer {
    template: BeatTemplate,
    /// The independent leads of the record, lead-major (`N_INDEPENDENT` x record samples).
    work: Vec<f32>,
}

/// Baseline wander and noise of one lead.
#[derive(Debug, Clone, Copy)]
struct LeadNoise {
    dc: f32,
    /// Coefficients of sin(w_k t) and cos(w_k t) of each wander sinusoid.
    sin: [f32; N_WANDER],
    cos: [f32; N_WANDER],
    sd: f32,
}

impl Renderer {
    /// Renders the exam with parameters `p` and waveform stream `rng` into `out`
    /// (`N_SAMPLES * N_LEADS` values, sample-major). Without `noisy`, no baseline wander and no
    /// noise are added: the leads are exact projections of the dipole.
    pub(crate) fn render(
        &mut self,
        p: &EcgParams,
        rng: &mut SynthRng,
        noisy: bool,
        out: &mut [f32],
    ) {
        debug_assert_eq!(out.len(), N_SAMPLES * N_LEADS);
        let len = p.length.samples();
        let pad = p.length.pad(N_SAMPLES);
        self.template.render(&beat_waves(p, rng));
        self.work.clear();
        self.work.resize(N_INDEPENDENT * len, 0.0);
        let resp_hz = rng.random_range(0.15..0.4f32);
        self.add_beats(p, resp_hz, len, rng);
        if p.rhythm == Rhythm::AtrialFibrillation {
            self.add_fibrillation(len, rng);
        }

        out[..pad * N_LEADS].fill(0.0);
        out[(pad + len) * N_LEADS..].fill(0.0);
        let rows = &mut out[pad * N_LEADS..(pad + len) * N_LEADS];
        if !noisy {
            for (t, row) in rows.chunks_exact_mut(N_LEADS).enumerate() {
                row.copy_from_slice(&twelve_leads(&self.independent(t, len)));
            }
            return;
        }
        let freqs = [
            resp_hz,
            rng.random_range(0.03..0.1f32),
            rng.random_range(0.1..0.25f32),
        ];
        let wander_amp = [0.1f32, 0.25, 0.08];
        let noise_sd = rng.random_range(0.012..0.03f32);
        let leads: [LeadNoise; N_LEADS] = std::array::from_fn(|_| {
            let dc = 0.05 * rng.sample::<f32, _>(StandardNormal);
            let sd = noise_sd * rng.random_range(0.8..1.25f32);
            // a sin(w t + phi) = a cos(phi) sin(w t) + a sin(phi) cos(w t).
            let wander: [(f32, f32); N_WANDER] = std::array::from_fn(|k| {
                let a = wander_amp[k] * rng.random::<f32>();
                let (s, c) = (TAU as f32 * rng.random::<f32>()).sin_cos();
                (a * c, a * s)
            });
            LeadNoise {
                dc,
                sin: wander.map(|w| w.0),
                cos: wander.map(|w| w.1),
                sd,
            }
        });
        // sin/cos of each wander frequency, advanced by rotation (exact enough over 4,000
        // steps in f64, and much cheaper than calling sin per sample and lead).
        let steps: [(f64, f64); N_WANDER] =
            std::array::from_fn(|k| (TAU * freqs[k] as f64 / SAMPLE_RATE_HZ as f64).sin_cos());
        let mut phase = [(0.0f64, 1.0f64); N_WANDER];
        for (t, row) in rows.chunks_exact_mut(N_LEADS).enumerate() {
            let clean = twelve_leads(&self.independent(t, len));
            let s: [f32; N_WANDER] = std::array::from_fn(|k| phase[k].0 as f32);
            let c: [f32; N_WANDER] = std::array::from_fn(|k| phase[k].1 as f32);
            for (l, v) in row.iter_mut().enumerate() {
                let ln = &leads[l];
                let mut b = ln.dc;
                for k in 0..N_WANDER {
                    b += ln.sin[k] * s[k] + ln.cos[k] * c[k];
                }
                *v = clean[l] + b + ln.sd * fast_normal(rng);
            }
            for k in 0..N_WANDER {
                let (ps, pc) = phase[k];
                let (ds, dc) = steps[k];
                phase[k] = (ps * dc + pc * ds, pc * dc - ps * ds);
            }
        }
    }

    #[inline]
    fn independent(&self, t: usize, len: usize) -> [f32; N_INDEPENDENT] {
        std::array::from_fn(|l| self.work[l * len + t])
    }

    /// Overlap-adds the template at every beat time, from a random phase before the record
    /// starts until the record ends. Each beat's amplitude breathes with respiration.
    fn add_beats(&mut self, p: &EcgParams, resp_hz: f32, len: usize, rng: &mut SynthRng) {
        let fs = SAMPLE_RATE_HZ;
        let rr_mean = p.rr_s();
        let resp_phase = TAU as f32 * rng.random::<f32>();
        let amp_phase = TAU as f32 * rng.random::<f32>();
        let tpl = &self.template;
        let mut t = -rng.random::<f32>() * rr_mean;
        let end = len as f32 / fs + (tpl.r_index as f32) / fs;
        while t < end {
            let gain = 1.0 + 0.05 * (TAU as f32 * resp_hz * t + amp_phase).sin();
            let start = (t * fs).round() as i64 - tpl.r_index as i64;
            let lo = (-start).max(0) as usize;
            let hi = ((len as i64 - start).min(tpl.len as i64)).max(0) as usize;
            if lo < hi {
                for l in 0..N_INDEPENDENT {
                    let src = &tpl.lead(l)[lo..hi];
                    let at = (start + lo as i64) as usize + l * len;
                    for (d, s) in self.work[at..at + src.len()].iter_mut().zip(src) {
                        *d += gain * s;
                    }
                }
            }
            let n = rng.sample::<f32, _>(StandardNormal);
            let rr = match p.rhythm {
                Rhythm::Sinus => {
                    let rsa = p.rr_respiratory * (TAU as f32 * resp_hz * t + resp_phase).sin();
                    rr_mean * (1.0 + rsa + p.rr_jitter * n)
                }
                Rhythm::AtrialFibrillation => rr_mean * (0.22 * n - 0.024).exp(),
            };
            t += rr.clamp(0.25, 3.0);
        }
    }

    /// Adds fibrillatory waves: three sinusoids of 4.5-8 Hz along an atrial direction that
    /// favours V1.
    fn add_fibrillation(&mut self, len: usize, rng: &mut SynthRng) {
        let dirs = lead_directions();
        let amp = rng.random_range(0.03..0.09f32);
        let dir: Vec3 = [0.3, 0.4, 0.85];
        let coef: [f32; N_INDEPENDENT] = std::array::from_fn(|l| {
            amp * (dirs[l][0] * dir[0] + dirs[l][1] * dir[1] + dirs[l][2] * dir[2])
        });
        let waves: [(f32, f32, f32); 3] = std::array::from_fn(|_| {
            let w = TAU as f32 * rng.random_range(4.5..8.0f32) / SAMPLE_RATE_HZ;
            (
                w,
                TAU as f32 * rng.random::<f32>(),
                rng.random_range(0.3..1.0f32),
            )
        });
        for t in 0..len {
            let f: f32 = waves
                .iter()
                .map(|(w, ph, a)| a * (w * t as f32 + ph).sin())
                .sum::<f32>()
                / 1.8;
            for (l, k) in coef.iter().enumerate() {
                self.work[l * len + t] += k * f;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::physiology::{self, Conduction, RecordLength};
    use crate::synth::rng::{Stream, stream};

    fn params(i: u64) -> EcgParams {
        let mut rng = stream(11, Stream::Patient, i);
        physiology::draw(
            30.0 + i as f64,
            i.is_multiple_of(2),
            i.is_multiple_of(5),
            &mut rng,
        )
    }

    fn render(p: &EcgParams, seed: u64, noisy: bool) -> Vec<f32> {
        let mut out = vec![f32::NAN; N_SAMPLES * N_LEADS];
        Renderer::default().render(p, &mut stream(seed, Stream::Waveform, 0), noisy, &mut out);
        out
    }

    #[test]
    fn lead_identities_hold_exactly_without_noise() {
        for i in 0..40 {
            let p = params(i);
            let out = render(&p, i, false);
            let pad = p.length.pad(N_SAMPLES);
            for row in out.chunks_exact(N_LEADS).skip(pad).take(p.length.samples()) {
                let (l1, l2) = (row[0], row[1]);
                assert_eq!(row[2], l2 - l1, "III = II - I");
                assert_eq!(row[3], -(l1 + l2) / 2.0, "aVR = -(I + II) / 2");
                assert_eq!(row[4], l1 - l2 / 2.0, "aVL = I - II / 2");
                assert_eq!(row[5], l2 - l1 / 2.0, "aVF = II - I / 2");
            }
        }
    }

    #[test]
    fn padding_is_symmetric_zeros() {
        let mut seen = [false; 2];
        for i in 0..20 {
            let p = params(i);
            let out = render(&p, i, true);
            let zero_row = |r: &[f32]| r.iter().all(|&v| v == 0.0);
            let rows: Vec<&[f32]> = out.chunks_exact(N_LEADS).collect();
            let lead = rows.iter().take_while(|r| zero_row(r)).count();
            let trail = rows.iter().rev().take_while(|r| zero_row(r)).count();
            let want = match p.length {
                RecordLength::Seconds7 => 648,
                RecordLength::Seconds10 => 48,
            };
            seen[(want == 48) as usize] = true;
            assert_eq!((lead, trail), (want, want), "exam {i}, {:?}", p.length);
            assert!(out.iter().all(|v| v.is_finite()));
        }
        assert_eq!(seen, [true, true], "both record lengths drawn");
    }

    #[test]
    fn same_stream_same_bytes() {
        let p = params(3);
        assert_eq!(render(&p, 9, true), render(&p, 9, true));
        assert_ne!(render(&p, 9, true), render(&p, 10, true));
    }

    #[test]
    fn qrs_is_about_a_millivolt() {
        let mut p = params(1);
        p.conduction = Conduction::Normal;
        p.r_amp_mv = 1.0;
        let out = render(&p, 1, false);
        let peak = out.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((0.6..2.5).contains(&peak), "largest |value| {peak} mV");
    }

    #[test]
    fn heart_rate_shows_in_the_beat_count() {
        for (hr, want) in [(60.0f32, 10.0f32), (120.0, 20.0)] {
            let mut p = params(2);
            p.rhythm = Rhythm::Sinus;
            p.conduction = Conduction::Normal;
            p.length = RecordLength::Seconds10;
            p.heart_rate_bpm = hr;
            p.rr_jitter = 0.0;
            p.rr_respiratory = 0.0;
            p.axis_deg = 60.0;
            let out = render(&p, 2, false);
            // R peaks on lead II: local maxima above half the largest value.
            let ii: Vec<f32> = out.chunks_exact(N_LEADS).map(|r| r[1]).collect();
            let top = ii.iter().fold(0f32, |m, &v| m.max(v));
            let peaks = (1..ii.len() - 1)
                .filter(|&t| ii[t] > 0.5 * top && ii[t] >= ii[t - 1] && ii[t] > ii[t + 1])
                .count();
            assert!(
                (peaks as f32 - want).abs() <= 1.0,
                "{hr} bpm: {peaks} peaks in 10 s"
            );
        }
    }
}
