//! The cardiac dipole model: one beat is a sum of waves (P, Q, R, S, T and, with a bundle branch
//! block, extra QRS lobes), each a Gaussian in time times a fixed 3-D vector. A lead records the
//! projection of the dipole on its direction. Only eight leads are independent: I and II (the
//! frontal plane) and V1..V6 (chest leads, mostly in the horizontal plane); III, aVR, aVL and
//! aVF are derived from I and II by the Einthoven and Goldberger identities, so those hold
//! exactly.
//!
//! Axes: x toward the patient's left, y inferior (toward the feet), z anterior.
use rand::Rng;
use rand_distr::StandardNormal;

use super::physiology::{Conduction, EcgParams, Rhythm, SAMPLE_RATE_HZ};
use super::rng::SynthRng;

/// Number of independent leads rendered from the dipole: I, II, V1..V6.
pub(crate) const N_INDEPENDENT: usize = 8;

/// A 3-D vector.
pub(crate) type Vec3 = [f32; 3];

/// Gain of the precordial leads relative to the limb leads (chest electrodes are closer).
const PRECORDIAL_GAIN: f32 = 1.4;

/// Horizontal-plane angles of V1..V6 from the patient's left toward anterior, degrees.
const PRECORDIAL_ANGLES_DEG: [f32; 6] = [120.0, 100.0, 80.0, 60.0, 35.0, 10.0];

/// Inferior components of V1..V6: the lateral chest electrodes sit below the heart's centre.
const PRECORDIAL_INFERIOR: [f32; 6] = [0.0, 0.0, 0.15, 0.3, 0.35, 0.35];

/// Projection directions of the independent leads, in the order I, II, V1..V6.
pub(crate) fn lead_directions() -> [Vec3; N_INDEPENDENT] {
    let mut d = [[0.0; 3]; N_INDEPENDENT];
    d[0] = [1.0, 0.0, 0.0];
    let (s60, c60) = 60f32.to_radians().sin_cos();
    d[1] = [c60, s60, 0.0];
    for (k, a) in PRECORDIAL_ANGLES_DEG.iter().enumerate() {
        let (s, c) = a.to_radians().sin_cos();
        let y = PRECORDIAL_INFERIOR[k];
        d[2 + k] = [
            PRECORDIAL_GAIN * c,
            PRECORDIAL_GAIN * y,
            PRECORDIAL_GAIN * s,
        ];
    }
    d
}

/// The twelve leads in CODE order (I, II, III, aVR, aVL, aVF, V1..V6) from the independent
/// ones (I, II, V1..V6). These are the only formulas for the derived leads in the generator.
#[inline]
pub(crate) fn twelve_leads(ind: &[f32; N_INDEPENDENT]) -> [f32; 12] {
    let (i, ii) = (ind[0], ind[1]);
    [
        i,
        ii,
        ii - i,
        -(i + ii) * 0.5,
        i - ii * 0.5,
        ii - i * 0.5,
        ind[2],
        ind[3],
        ind[4],
        ind[5],
        ind[6],
        ind[7],
    ]
}

/// One wave of a beat: a Gaussian in time around `centre_s` (seconds from the R peak) with
/// width `sigma_s`, along the vector `vector` (direction times amplitude in mV).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Wave {
    pub centre_s: f32,
    pub sigma_s: f32,
    pub vector: Vec3,
}

fn unit(v: Vec3) -> Vec3 {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-6);
    [v[0] / n, v[1] / n, v[2] / n]
}

fn scaled(v: Vec3, a: f32) -> Vec3 {
    let u = unit(v);
    [u[0] * a, u[1] * a, u[2] * a]
}

/// A vector in the frontal plane at `deg` degrees with anterior component `z`.
fn frontal(deg: f32, z: f32) -> Vec3 {
    let (s, c) = deg.to_radians().sin_cos();
    [c, s, z]
}

/// The waves of one beat of an exam with parameters `p`; small direction and timing details
/// are drawn from `rng`.
pub(crate) fn beat_waves(p: &EcgParams, rng: &mut SynthRng) -> Vec<Wave> {
    let mut n = || rng.sample::<f32, _>(StandardNormal);
    let qrs = p.qrs_ms / 1000.0;
    let onset = -0.45 * qrs;
    let tilt = -0.15 + 0.1 * n();
    let r_dir = frontal(p.axis_deg, tilt);
    let mut waves = Vec::with_capacity(8);
    if p.rhythm == Rhythm::Sinus {
        let p_dur = 0.1 + 0.01 * n();
        let p_dir = frontal(55.0 + 12.0 * n(), 0.15);
        waves.push(Wave {
            centre_s: onset - p.pr_ms / 1000.0 + p_dur / 2.0,
            sigma_s: p_dur / 5.0,
            vector: scaled(p_dir, p.p_amp_mv),
        });
    }
    let r = p.r_amp_mv;
    match p.conduction {
        Conduction::Normal => {
            let q_dir = [-0.5, 0.3 + 0.1 * n(), 0.8];
            let s_dir = [-0.2 + 0.1 * n(), -0.5, -0.8];
            waves.push(Wave {
                centre_s: -0.3 * qrs,
                sigma_s: 0.07 * qrs,
                vector: scaled(q_dir, 0.12 * r),
            });
            waves.push(Wave {
                centre_s: 0.0,
                sigma_s: 0.1 * qrs,
                vector: scaled(r_dir, r),
            });
            waves.push(Wave {
                centre_s: 0.28 * qrs,
                sigma_s: 0.08 * qrs,
                vector: scaled(s_dir, 0.35 * r),
            });
        }
        Conduction::RightBundleBranchBlock => {
            // Normal early activation, then a slow rightward, anterior right-ventricular lobe.
            let q_dir = [-0.5, 0.3, 0.8];
            let late = [-0.6, 0.1 + 0.1 * n(), 0.8];
            waves.push(Wave {
                centre_s: -0.3 * qrs,
                sigma_s: 0.06 * qrs,
                vector: scaled(q_dir, 0.12 * r),
            });
            waves.push(Wave {
                centre_s: -0.12 * qrs,
                sigma_s: 0.08 * qrs,
                vector: scaled(r_dir, r),
            });
            waves.push(Wave {
                centre_s: 0.1 * qrs,
                sigma_s: 0.06 * qrs,
                vector: scaled([-0.3, -0.4, -0.8], 0.3 * r),
            });
            waves.push(Wave {
                centre_s: 0.3 * qrs,
                sigma_s: 0.09 * qrs,
                vector: scaled(late, 0.6 * r),
            });
        }
        Conduction::LeftBundleBranchBlock => {
            // No septal q; a broad, notched leftward and posterior activation.
            let left = [0.8, 0.25 + 0.1 * n(), -0.6];
            waves.push(Wave {
                centre_s: -0.2 * qrs,
                sigma_s: 0.1 * qrs,
                vector: scaled(left, 1.05 * r),
            });
            waves.push(Wave {
                centre_s: 0.2 * qrs,
                sigma_s: 0.11 * qrs,
                vector: scaled(left, 1.15 * r),
            });
        }
    }
    let qt = p.qt_ms / 1000.0;
    let t_sigma = 0.1 * qt;
    let t_end = onset + qt;
    let t_dir = match p.conduction {
        // Secondary repolarisation change: T opposite to the QRS.
        Conduction::LeftBundleBranchBlock => [-0.8, -0.25, 0.6],
        _ => frontal(p.axis_deg - 10.0 + 15.0 * n(), 0.3),
    };
    // An asymmetric T: a slow upstroke and a faster downstroke.
    waves.push(Wave {
        centre_s: t_end - 3.3 * t_sigma,
        sigma_s: t_sigma,
        vector: scaled(t_dir, 0.7 * p.t_amp_mv),
    });
    waves.push(Wave {
        centre_s: t_end - 2.3 * t_sigma,
        sigma_s: 0.7 * t_sigma,
        vector: scaled(t_dir, 0.55 * p.t_amp_mv),
    });
    waves
}

/// A beat rendered on the independent leads, sampled at 400 Hz.
#[derive(Debug, Clone, Default)]
pub(crate) struct BeatTemplate {
    /// `N_INDEPENDENT` rows of `len` samples, lead-major.
    pub samples: Vec<f32>,
    /// Samples per lead.
    pub len: usize,
    /// Index of the R peak (t = 0) in a row.
    pub r_index: usize,
}

impl BeatTemplate {
    /// Samples of independent lead `lead`.
    pub fn lead(&self, lead: usize) -> &[f32] {
        &self.samples[lead * self.len..(lead + 1) * self.len]
    }

    /// Renders `waves` into `self` (reusing its buffer): each wave is sampled within four
    /// standard deviations of its centre and projected on every independent lead.
    pub fn render(&mut self, waves: &[Wave]) {
        let dirs = lead_directions();
        let fs = SAMPLE_RATE_HZ;
        let start = waves
            .iter()
            .map(|w| w.centre_s - 4.0 * w.sigma_s)
            .fold(0.0f32, f32::min);
        let end = waves
            .iter()
            .map(|w| w.centre_s + 4.0 * w.sigma_s)
            .fold(0.0f32, f32::max);
        self.r_index = (-start * fs).ceil() as usize;
        self.len = self.r_index + (end * fs).ceil() as usize + 1;
        self.samples.clear();
        self.samples.resize(N_INDEPENDENT * self.len, 0.0);
        for w in waves {
            let coef: [f32; N_INDEPENDENT] = std::array::from_fn(|l| {
                dirs[l][0] * w.vector[0] + dirs[l][1] * w.vector[1] + dirs[l][2] * w.vector[2]
            });
            let c = self.r_index as f32 + w.centre_s * fs;
            let half = 4.0 * w.sigma_s * fs;
            let lo = (c - half).floor().max(0.0) as usize;
            let hi = ((c + half).ceil() as usize).min(self.len - 1);
            let inv = 1.0 / (w.sigma_s * fs);
            for i in lo..=hi {
                let u = (i as f32 - c) * inv;
                let g = (-0.5 * u * u).exp();
                for (l, k) in coef.iter().enumerate() {
                    self.samples[l * self.len + i] += k * g;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_leads_are_projections_on_the_hexaxial_directions() {
        // A dipole at angle a in the frontal plane gives lead L = |d| cos(a - angle(L)) on
        // I, II, III and sqrt(3)/2 |d| cos(a - angle(L)) on aVR, aVL, aVF.
        let dirs = lead_directions();
        for deg in [-40.0f32, 0.0, 37.0, 90.0, 160.0] {
            let v = frontal(deg, 0.0);
            let ind: [f32; N_INDEPENDENT] =
                std::array::from_fn(|l| dirs[l][0] * v[0] + dirs[l][1] * v[1]);
            let twelve = twelve_leads(&ind);
            let k = 3f32.sqrt() / 2.0;
            for (lead, angle, gain) in [
                (0, 0.0, 1.0),
                (1, 60.0, 1.0),
                (2, 120.0, 1.0),
                (3, -150.0, k),
                (4, -30.0, k),
                (5, 90.0, k),
            ] {
                let want = gain * (deg - angle as f32).to_radians().cos();
                assert!(
                    (twelve[lead] - want).abs() < 1e-5,
                    "lead {lead} at {deg} deg"
                );
            }
        }
    }

    #[test]
    fn template_peaks_at_the_r_wave() {
        let waves = [Wave {
            centre_s: 0.0,
            sigma_s: 0.01,
            vector: [1.0, 0.0, 0.0],
        }];
        let mut t = BeatTemplate::default();
        t.render(&waves);
        let lead_i = t.lead(0);
        let peak = lead_i
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        assert_eq!(peak, Some(t.r_index));
        assert!((lead_i[t.r_index] - 1.0).abs() < 1e-6);
        // Lead II sees the x component at cos 60.
        assert!((t.lead(1)[t.r_index] - 0.5).abs() < 1e-6);
    }

    fn params(conduction: Conduction, qrs_ms: f32, rhythm: Rhythm) -> EcgParams {
        EcgParams {
            rhythm,
            conduction,
            length: crate::synth::physiology::RecordLength::Seconds10,
            heart_rate_bpm: 70.0,
            pr_ms: 160.0,
            qrs_ms,
            qt_ms: 400.0,
            p_amp_mv: 0.15,
            r_amp_mv: 1.2,
            t_amp_mv: 0.3,
            axis_deg: 50.0,
            rr_jitter: 0.0,
            rr_respiratory: 0.0,
        }
    }

    /// Width in ms of the contiguous run around the R peak where the spatial magnitude of the
    /// independent leads exceeds 3 % of its largest value (where the QRS leaves the baseline).
    fn qrs_width_ms(p: &EcgParams) -> f32 {
        let mut t = BeatTemplate::default();
        t.render(&beat_waves(
            p,
            &mut crate::synth::rng::stream(1, crate::synth::rng::Stream::Waveform, 0),
        ));
        let mag: Vec<f32> = (0..t.len)
            .map(|i| {
                (0..N_INDEPENDENT)
                    .map(|l| t.lead(l)[i].powi(2))
                    .sum::<f32>()
                    .sqrt()
            })
            .collect();
        let peak = mag.iter().fold(0f32, |m, &v| m.max(v));
        let above = |i: &usize| mag[*i] > 0.03 * peak;
        let lo = (0..=t.r_index).rev().take_while(above).count();
        let hi = (t.r_index..t.len).take_while(above).count();
        (lo + hi) as f32 * 1000.0 / SAMPLE_RATE_HZ
    }

    #[test]
    fn rendered_qrs_width_agrees_with_the_labels() {
        // The narrowest blocks drawn must look wide (>= 120 ms), the widest normal QRS not.
        let normal = qrs_width_ms(&params(Conduction::Normal, 114.0, Rhythm::Sinus));
        let rbbb = qrs_width_ms(&params(
            Conduction::RightBundleBranchBlock,
            126.0,
            Rhythm::Sinus,
        ));
        let lbbb = qrs_width_ms(&params(
            Conduction::LeftBundleBranchBlock,
            130.0,
            Rhythm::Sinus,
        ));
        assert!(normal < 120.0, "normal QRS {normal} ms");
        assert!(
            rbbb >= 120.0 && lbbb >= 120.0,
            "RBBB {rbbb} ms, LBBB {lbbb} ms"
        );
        let narrow = qrs_width_ms(&params(Conduction::Normal, 80.0, Rhythm::Sinus));
        assert!(
            narrow < normal - 10.0,
            "QRS width follows the parameter: {narrow} vs {normal}"
        );
    }

    #[test]
    fn atrial_fibrillation_has_no_p_wave() {
        let mut rng = crate::synth::rng::stream(2, crate::synth::rng::Stream::Waveform, 0);
        let qrs_onset = -0.45 * 0.095;
        let before_qrs = |p: &EcgParams, rng: &mut SynthRng| {
            beat_waves(p, rng)
                .iter()
                .filter(|w| w.centre_s < qrs_onset - 0.02)
                .count()
        };
        assert_eq!(
            before_qrs(&params(Conduction::Normal, 95.0, Rhythm::Sinus), &mut rng),
            1
        );
        assert_eq!(
            before_qrs(
                &params(Conduction::Normal, 95.0, Rhythm::AtrialFibrillation),
                &mut rng
            ),
            0
        );
    }
}
