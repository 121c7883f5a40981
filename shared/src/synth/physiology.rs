//! The physiology of one synthetic exam: how the hidden biological age (plus sex and chance)
//! sets the rhythm, the intervals, the amplitudes and the axis of the ECG, and which CODE
//! diagnoses follow from those parameters.
//!
//! With `z = (bio_age - 50) / 17` (clamped to -2.5..3.5), the means drift as follows; each also
//! varies from exam to exam, so that age is learnable from the waveform but not read off one
//! number:
//!
//! | parameter | mean | exam-to-exam spread |
//! | --- | --- | --- |
//! | heart rate (sinus) | 72 - 3.5 z bpm (men 2 lower) | x exp(N(0, 0.15)) |
//! | PR interval | 155 + 11 z ms | SD 17 ms |
//! | QRS duration | 90 + 4 z ms (men +4), capped at 114 without a block | SD 8 ms |
//! | QTc (Bazett: QT = QTc sqrt(RR / 1 s)) | 405 + 7 z ms (men -8) | SD 15 ms |
//! | R amplitude | 1.25 exp(-0.16 z) mV (men x1.1) | x exp(N(0, 0.22)) |
//! | T amplitude | 0.32 exp(-0.18 z) mV | x exp(N(0, 0.25)) |
//! | frontal QRS axis | 55 - 14 z degrees | SD 22 degrees |
//! | RR variability (jitter, respiratory) | 3.5 %, 4 % x exp(-0.35 z) | x exp(N(0, 0.3)) |
//!
//! Atrial fibrillation has a prevalence of 0.25 % at 16 years that grows 5.5 % a year of bio age
//! (capped at 35 %; 70 % on a later exam of a patient who had it). Right / left bundle branch
//! blocks occur in 1.2 % x exp(0.5 z) / 0.5 % x exp(0.6 z) of exams and widen the QRS to
//! 126-160 / 130-170 ms. The labels are those of CODE-15%: `1dAVb` = sinus with PR > 200 ms,
//! `SB` = sinus below 50 bpm, `ST` = sinus above 100 bpm, `AF`, `RBBB`, `LBBB`.
use rand::Rng;
use rand_distr::StandardNormal;

use super::rng::SynthRng;

/// Sampling rate of every record, Hz.
pub const SAMPLE_RATE_HZ: f32 = 400.0;

/// The heart rhythm of an exam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rhythm {
    /// Sinus rhythm: P waves, a fixed PR interval, nearly regular RR.
    Sinus,
    /// Atrial fibrillation: no P waves, irregular RR, a fibrillatory baseline.
    AtrialFibrillation,
}

/// Ventricular conduction of an exam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduction {
    /// Normal conduction (QRS under 120 ms).
    Normal,
    /// Right bundle branch block: wide QRS with a late rightward, anterior deflection (rSR' in V1).
    RightBundleBranchBlock,
    /// Left bundle branch block: wide, notched leftward QRS, QS in V1, discordant T.
    LeftBundleBranchBlock,
}

/// Length of a record before padding: CODE holds 7 s and 10 s recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLength {
    /// 7 s: 2,800 samples, 648 zeros each side.
    Seconds7,
    /// 10 s: 4,000 samples, 48 zeros each side.
    Seconds10,
}

impl RecordLength {
    /// Samples of signal.
    pub fn samples(self) -> usize {
        match self {
            RecordLength::Seconds7 => 2800,
            RecordLength::Seconds10 => 4000,
        }
    }

    /// Zeros on each side when padded to `total` samples (4,096 in CODE).
    pub fn pad(self, total: usize) -> usize {
        total.saturating_sub(self.samples()) / 2
    }
}

/// Everything the waveform of an exam depends on that is also age- or label-relevant. The
/// remaining details (exact wave directions, beat times, noise) come from the exam's own stream
/// when it is rendered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EcgParams {
    /// Rhythm.
    pub rhythm: Rhythm,
    /// Ventricular conduction.
    pub conduction: Conduction,
    /// Record length.
    pub length: RecordLength,
    /// Mean ventricular rate, beats per minute.
    pub heart_rate_bpm: f32,
    /// PR interval (P onset to QRS onset), ms; not drawn on the record in atrial fibrillation.
    pub pr_ms: f32,
    /// QRS duration, ms.
    pub qrs_ms: f32,
    /// QT interval (QRS onset to T end) at the mean RR, ms.
    pub qt_ms: f32,
    /// P wave amplitude, mV.
    pub p_amp_mv: f32,
    /// R wave amplitude (length of the main QRS vector), mV.
    pub r_amp_mv: f32,
    /// T wave amplitude, mV.
    pub t_amp_mv: f32,
    /// Frontal QRS axis, degrees (0 = toward lead I, 90 = toward aVF).
    pub axis_deg: f32,
    /// Beat-to-beat RR jitter, as a fraction of the mean RR (standard deviation).
    pub rr_jitter: f32,
    /// Respiratory sinus arrhythmia, as a fraction of the mean RR (amplitude).
    pub rr_respiratory: f32,
}

impl EcgParams {
    /// Mean RR interval, seconds.
    pub fn rr_s(&self) -> f32 {
        60.0 / self.heart_rate_bpm
    }
}

/// The six CODE-15% diagnosis labels of an exam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Diagnoses {
    /// First-degree AV block (`1dAVb`): sinus rhythm with PR > 200 ms.
    pub avb1: bool,
    /// Right bundle branch block (`RBBB`).
    pub rbbb: bool,
    /// Left bundle branch block (`LBBB`).
    pub lbbb: bool,
    /// Sinus bradycardia (`SB`): sinus rhythm under 50 bpm.
    pub sb: bool,
    /// Sinus tachycardia (`ST`): sinus rhythm over 100 bpm.
    pub st: bool,
    /// Atrial fibrillation (`AF`).
    pub af: bool,
}

impl Diagnoses {
    /// The labels that the parameters of an exam imply.
    pub fn of(p: &EcgParams) -> Self {
        let sinus = p.rhythm == Rhythm::Sinus;
        Diagnoses {
            avb1: sinus && p.pr_ms > 200.0,
            rbbb: p.conduction == Conduction::RightBundleBranchBlock,
            lbbb: p.conduction == Conduction::LeftBundleBranchBlock,
            sb: sinus && p.heart_rate_bpm < 50.0,
            st: sinus && p.heart_rate_bpm > 100.0,
            af: !sinus,
        }
    }

    /// `normal_ecg`: none of the six.
    pub fn normal(&self) -> bool {
        !(self.avb1 || self.rbbb || self.lbbb || self.sb || self.st || self.af)
    }
}

/// Standardised biological age used by the trends.
fn z_age(bio_age: f64) -> f32 {
    (((bio_age - 50.0) / 17.0) as f32).clamp(-2.5, 3.5)
}

fn normal(rng: &mut SynthRng) -> f32 {
    rng.sample::<f32, _>(StandardNormal)
}

/// Probability of atrial fibrillation on an exam at `bio_age`, for a patient who had it on an
/// earlier exam (`had_af`) or not.
pub fn af_probability(bio_age: f64, had_af: bool) -> f64 {
    if had_af {
        0.7
    } else {
        (0.0025 * (0.055 * (bio_age - 16.0)).exp()).clamp(0.0, 0.35)
    }
}

/// Draws the parameters of one exam of a patient of biological age `bio_age`.
pub fn draw(bio_age: f64, is_male: bool, had_af: bool, rng: &mut SynthRng) -> EcgParams {
    let z = z_age(bio_age);
    let male = if is_male { 1.0f32 } else { 0.0 };
    let length = if rng.random_bool(0.5) {
        RecordLength::Seconds7
    } else {
        RecordLength::Seconds10
    };
    let rhythm = if rng.random_bool(af_probability(bio_age, had_af)) {
        Rhythm::AtrialFibrillation
    } else {
        Rhythm::Sinus
    };
    let conduction = if rng.random_bool((0.012 * (0.5 * z).exp()) as f64) {
        Conduction::RightBundleBranchBlock
    } else if rng.random_bool((0.005 * (0.6 * z).exp()) as f64) {
        Conduction::LeftBundleBranchBlock
    } else {
        Conduction::Normal
    };
    let heart_rate_bpm = match rhythm {
        Rhythm::Sinus => (72.0 - 3.5 * z - 2.0 * male) * (0.15 * normal(rng)).exp(),
        Rhythm::AtrialFibrillation => 88.0 * (0.18 * normal(rng)).exp(),
    }
    .clamp(35.0, 170.0);
    let pr_ms = (155.0 + 11.0 * z + 17.0 * normal(rng)).clamp(100.0, 320.0);
    let narrow = (90.0 + 4.0 * z + 4.0 * male + 8.0 * normal(rng)).clamp(66.0, 114.0);
    let qrs_ms = match conduction {
        Conduction::Normal => narrow,
        Conduction::RightBundleBranchBlock => rng.random_range(126.0..160.0),
        Conduction::LeftBundleBranchBlock => rng.random_range(130.0..170.0),
    };
    let qtc_ms = (405.0 + 7.0 * z - 8.0 * male + 15.0 * normal(rng)).clamp(340.0, 500.0);
    // Bazett on the mean RR; a block lengthens depolarisation and hence QT by its extra width.
    let rr_s = 60.0 / heart_rate_bpm;
    let qt_ms = qtc_ms * rr_s.sqrt() + (qrs_ms - narrow).max(0.0);
    let p_amp_mv = 0.15 * (0.25 * normal(rng)).exp();
    let r_amp_mv = 1.25 * (-0.16 * z + 0.22 * normal(rng)).exp() * (1.0 + 0.1 * male);
    let t_amp_mv = 0.32 * (-0.18 * z + 0.25 * normal(rng)).exp();
    let axis_deg = (55.0 - 14.0 * z + 22.0 * normal(rng)).clamp(-90.0, 150.0);
    let hrv = (-0.35 * z + 0.3 * normal(rng)).exp();
    EcgParams {
        rhythm,
        conduction,
        length,
        heart_rate_bpm,
        pr_ms,
        qrs_ms,
        qt_ms,
        p_amp_mv,
        r_amp_mv,
        t_amp_mv,
        axis_deg,
        rr_jitter: 0.035 * hrv,
        rr_respiratory: 0.04 * hrv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::rng::{Stream, stream};

    fn draws(bio_age: f64, n: usize) -> Vec<EcgParams> {
        let mut rng = stream(3, Stream::Patient, bio_age as u64);
        (0..n)
            .map(|i| draw(bio_age, i.is_multiple_of(2), false, &mut rng))
            .collect()
    }

    fn mean(xs: impl Iterator<Item = f32>) -> f32 {
        let v: Vec<f32> = xs.collect();
        v.iter().sum::<f32>() / v.len() as f32
    }

    #[test]
    fn labels_follow_the_parameters() {
        for p in draws(75.0, 4000) {
            let d = Diagnoses::of(&p);
            let sinus = p.rhythm == Rhythm::Sinus;
            assert_eq!(d.af, !sinus);
            assert_eq!(d.sb, sinus && p.heart_rate_bpm < 50.0);
            assert_eq!(d.st, sinus && p.heart_rate_bpm > 100.0);
            assert_eq!(d.avb1, sinus && p.pr_ms > 200.0);
            assert_eq!(d.rbbb || d.lbbb, p.qrs_ms >= 120.0, "qrs {} ms", p.qrs_ms);
            assert!(!(d.rbbb && d.lbbb));
            assert_eq!(
                d.normal(),
                !(d.avb1 || d.rbbb || d.lbbb || d.sb || d.st || d.af)
            );
        }
    }

    #[test]
    fn every_label_occurs_at_old_age() {
        let ds: Vec<Diagnoses> = draws(85.0, 6000).iter().map(Diagnoses::of).collect();
        for (name, f) in [
            ("1dAVb", (|d: &Diagnoses| d.avb1) as fn(&Diagnoses) -> bool),
            ("RBBB", |d| d.rbbb),
            ("LBBB", |d| d.lbbb),
            ("SB", |d| d.sb),
            ("ST", |d| d.st),
            ("AF", |d| d.af),
            ("normal", |d| d.normal()),
        ] {
            assert!(ds.iter().any(f), "{name} never drawn");
        }
    }

    #[test]
    fn parameters_drift_with_age() {
        let (young, old) = (draws(30.0, 3000), draws(80.0, 3000));
        let m = |ps: &[EcgParams], f: fn(&EcgParams) -> f32| mean(ps.iter().map(f));
        assert!(m(&old, |p| p.pr_ms) > m(&young, |p| p.pr_ms) + 20.0);
        assert!(m(&old, |p| p.r_amp_mv) < 0.8 * m(&young, |p| p.r_amp_mv));
        assert!(m(&old, |p| p.axis_deg) < m(&young, |p| p.axis_deg) - 25.0);
        assert!(m(&old, |p| p.rr_jitter) < m(&young, |p| p.rr_jitter));
        let af = |ps: &[EcgParams]| ps.iter().filter(|p| p.rhythm != Rhythm::Sinus).count();
        assert!(af(&old) > 3 * af(&young).max(1));
    }

    #[test]
    fn padding_is_symmetric() {
        assert_eq!(RecordLength::Seconds7.pad(4096), 648);
        assert_eq!(RecordLength::Seconds10.pad(4096), 48);
        for l in [RecordLength::Seconds7, RecordLength::Seconds10] {
            assert_eq!(2 * l.pad(4096) + l.samples(), 4096);
        }
    }
}
