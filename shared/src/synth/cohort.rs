//! The synthetic patients and their exams, in CSV order, without waveforms.
//!
//! A patient has 1-4 exams (68 / 20 / 8 / 4 %, 1.48 on average as in CODE-15%), a sex (40 %
//! men), an age at the first exam (normal, mean 51.5, SD 18, truncated to 16..=100) and a hidden
//! biological-age offset (normal, SD 7 years) that is the same on all their exams: the
//! biological age of an exam is its (integer) age plus the offset. Follow-up starts at the first
//! exam: death comes from a Gompertz hazard `a exp(b (bio_age + t))` with mortality doubling
//! every 8 years of biological age, censoring is uniform on 0.1..7.3 years (mean 3.7), so that
//! about 3 % of patients die, and those who look older than they are die more often. Later exams
//! fall before death or censoring, at non-decreasing ages. `death` and `timey` go on the
//! patient's first exam only.
//!
//! Everything about patient `i` comes from its own random stream, so patients can be generated
//! in any order; exam and patient ids are keyed permutations of the running indices, hence
//! unique.
use rand::Rng;
use rand_distr::{Exp1, StandardNormal};

use super::physiology::{self, Diagnoses, EcgParams, Rhythm};
use super::rng::{IdPermutation, Stream, SynthRng, stream, stream_seed};

/// Smallest id given to exams and patients (6-7 digit ids, as in CODE).
const ID_BASE: i64 = 100_000;
/// Ids are drawn from `ID_BASE..ID_BASE + max(ID_SPAN, cohort size)`.
const ID_SPAN: u64 = 9_900_000;
/// Cumulative probabilities of 1, 2, 3 exams (the rest have 4).
const EXAM_COUNT_CDF: [f64; 3] = [0.68, 0.88, 0.96];
/// Gompertz hazard at biological age 0, per year.
pub const GOMPERTZ_A: f64 = 2.75e-5;
/// Gompertz slope per year of biological age: the hazard doubles every 8 years.
pub const GOMPERTZ_B: f64 = std::f64::consts::LN_2 / 8.0;
/// Standard deviation of the hidden biological-age offset, years.
pub const BIO_OFFSET_SD: f64 = 7.0;

/// Outcome of a patient, written on their first exam.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Died during follow-up.
    pub death: bool,
    /// Years from the first exam to death or censoring (whole days / 365).
    pub timey: f64,
}

/// One exam: its CSV row and what its tracing is rendered from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExamPlan {
    /// Position of the exam in `exams.csv` (0-based); also the index of its waveform stream.
    pub index: u64,
    /// `exam_id`.
    pub exam_id: i64,
    /// `patient_id`.
    pub patient_id: i64,
    /// `age`, integer years.
    pub age: u32,
    /// `is_male`.
    pub is_male: bool,
    /// The hidden biological age (age + the patient's offset): written as `nn_predicted_age`.
    pub bio_age: f64,
    /// `death` and `timey`, on the patient's first exam only.
    pub outcome: Option<Outcome>,
    /// The waveform's parameters.
    pub params: EcgParams,
    /// The diagnosis columns, implied by `params`.
    pub labels: Diagnoses,
}

/// The cohort of a given size and seed.
#[derive(Debug, Clone)]
pub struct Cohort {
    seed: u64,
    patients: u64,
    exam_ids: IdPermutation,
    patient_ids: IdPermutation,
}

impl Cohort {
    /// The cohort of `patients` patients generated with `seed`.
    pub fn new(patients: u64, seed: u64) -> Self {
        let key = stream_seed(seed, Stream::Ids, 0);
        Cohort {
            seed,
            patients,
            exam_ids: IdPermutation::new(ID_SPAN.max(patients.saturating_mul(4)), key),
            patient_ids: IdPermutation::new(ID_SPAN.max(patients), key ^ 0x5a5a),
        }
    }

    /// Number of patients.
    pub fn patients(&self) -> u64 {
        self.patients
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn draw_exam_count(rng: &mut SynthRng) -> usize {
        let u: f64 = rng.random();
        1 + EXAM_COUNT_CDF.iter().filter(|&&c| u >= c).count()
    }

    /// Number of exams of patient `patient` (cheap: one draw).
    pub fn exam_count(&self, patient: u64) -> usize {
        Self::draw_exam_count(&mut stream(self.seed, Stream::Patient, patient))
    }

    /// Total number of exams of the cohort.
    pub fn total_exams(&self) -> u64 {
        (0..self.patients).map(|p| self.exam_count(p) as u64).sum()
    }

    /// Appends the exams of patient `patient`, whose first exam is number `first_index` in CSV
    /// order, to `out`, earliest first.
    pub fn patient_exams(&self, patient: u64, first_index: u64, out: &mut Vec<ExamPlan>) {
        let mut rng = stream(self.seed, Stream::Patient, patient);
        let n = Self::draw_exam_count(&mut rng);
        let is_male = rng.random_bool(0.4);
        let age0 = loop {
            let a = 51.5 + 18.0 * rng.sample::<f64, _>(StandardNormal);
            if (16.0..101.0).contains(&a) {
                break a;
            }
        };
        let offset = BIO_OFFSET_SD * rng.sample::<f64, _>(StandardNormal);
        let age_at = |t: f64| ((age0 + t).floor() as u32).min(100);
        let bio0 = age_at(0.0) as f64 + offset;
        let outcome = draw_outcome(bio0, &mut rng);
        let mut times: Vec<f64> = vec![0.0];
        let window = outcome.timey.min(6.0);
        times.extend((1..n).map(|_| window * rng.random::<f64>()));
        times.sort_by(f64::total_cmp);
        let patient_id = ID_BASE + self.patient_ids.apply(patient) as i64;
        let mut had_af = false;
        for (k, t) in times.into_iter().enumerate() {
            let index = first_index + k as u64;
            let age = age_at(t);
            let bio_age = age as f64 + offset;
            let params = physiology::draw(bio_age, is_male, had_af, &mut rng);
            had_af |= params.rhythm == Rhythm::AtrialFibrillation;
            out.push(ExamPlan {
                index,
                exam_id: ID_BASE + self.exam_ids.apply(index) as i64,
                patient_id,
                age,
                is_male,
                bio_age,
                outcome: (k == 0).then_some(outcome),
                labels: Diagnoses::of(&params),
                params,
            });
        }
    }

    /// The exams of the whole cohort in CSV order, patient by patient.
    pub fn exams(&self) -> CohortExams<'_> {
        CohortExams {
            cohort: self,
            next_patient: 0,
            next_index: 0,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

/// Death or censoring of a patient of biological age `bio0` at the first exam.
fn draw_outcome(bio0: f64, rng: &mut SynthRng) -> Outcome {
    let e: f64 = rng.sample(Exp1);
    // Inverse of the cumulative Gompertz hazard (a / b) e^(b bio0) (e^(b t) - 1) = e.
    let death_t = (e * GOMPERTZ_B / (GOMPERTZ_A * (GOMPERTZ_B * bio0).exp())).ln_1p() / GOMPERTZ_B;
    let censor_t = rng.random_range(0.1..7.3);
    let t = death_t.min(censor_t);
    let days = (t * 365.0).ceil().max(1.0);
    Outcome {
        death: death_t <= censor_t,
        timey: days / 365.0,
    }
}

/// Iterator over the exams of a [`Cohort`] in CSV order.
#[derive(Debug)]
pub struct CohortExams<'a> {
    cohort: &'a Cohort,
    next_patient: u64,
    next_index: u64,
    buf: Vec<ExamPlan>,
    pos: usize,
}

impl Iterator for CohortExams<'_> {
    type Item = ExamPlan;

    fn next(&mut self) -> Option<ExamPlan> {
        if self.pos == self.buf.len() {
            if self.next_patient == self.cohort.patients {
                return None;
            }
            self.buf.clear();
            self.pos = 0;
            self.cohort
                .patient_exams(self.next_patient, self.next_index, &mut self.buf);
            self.next_patient += 1;
            self.next_index += self.buf.len() as u64;
        }
        self.pos += 1;
        Some(self.buf[self.pos - 1].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn ids_unique_ages_in_range_outcome_on_first_exam() {
        let c = Cohort::new(3000, 1);
        let exams: Vec<ExamPlan> = c.exams().collect();
        assert_eq!(exams.len() as u64, c.total_exams());
        let ids: HashSet<i64> = exams.iter().map(|e| e.exam_id).collect();
        assert_eq!(ids.len(), exams.len());
        assert!(
            exams
                .iter()
                .all(|e| (100_000..10_000_000).contains(&e.exam_id))
        );
        assert!(
            exams.iter().all(|e| (16..=100).contains(&e.age)),
            "ages within 16..=100"
        );
        let mut by_patient: HashMap<i64, Vec<&ExamPlan>> = HashMap::new();
        for (i, e) in exams.iter().enumerate() {
            assert_eq!(e.index, i as u64);
            by_patient.entry(e.patient_id).or_default().push(e);
        }
        assert_eq!(by_patient.len(), 3000, "patient ids unique per patient");
        for es in by_patient.values() {
            assert!((1..=4).contains(&es.len()));
            assert!(es[0].outcome.is_some() && es[1..].iter().all(|e| e.outcome.is_none()));
            assert!(
                es.windows(2)
                    .all(|w| w[0].age <= w[1].age && w[1].index == w[0].index + 1)
            );
            let gap = es[0].bio_age - es[0].age as f64;
            assert!(
                es.iter()
                    .all(|e| (e.bio_age - e.age as f64 - gap).abs() < 1e-9)
            );
        }
    }

    #[test]
    fn cohort_statistics_look_like_code() {
        let c = Cohort::new(20_000, 2);
        let exams: Vec<ExamPlan> = c.exams().collect();
        let n = exams.len() as f64;
        let ages: Vec<f64> = exams.iter().map(|e| e.age as f64).collect();
        let mean = ages.iter().sum::<f64>() / n;
        let sd = (ages.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(
            (49.0..56.0).contains(&mean) && (14.0..20.0).contains(&sd),
            "age {mean} +- {sd}"
        );
        let per_patient = n / 20_000.0;
        assert!(
            (1.4..1.56).contains(&per_patient),
            "{per_patient} exams a patient"
        );
        let outcomes: Vec<Outcome> = exams.iter().filter_map(|e| e.outcome).collect();
        let died = outcomes.iter().filter(|o| o.death).count() as f64 / outcomes.len() as f64;
        assert!((0.02..0.05).contains(&died), "death fraction {died}");
        let follow = outcomes.iter().map(|o| o.timey).sum::<f64>() / outcomes.len() as f64;
        assert!((3.2..4.0).contains(&follow), "mean follow-up {follow}");
    }

    #[test]
    fn older_looking_patients_die_more_at_equal_age() {
        let c = Cohort::new(40_000, 3);
        let (mut older, mut younger) = ([0u32; 2], [0u32; 2]);
        for e in c
            .exams()
            .filter(|e| e.outcome.is_some() && (55..=75).contains(&e.age))
        {
            let o = e.outcome.unwrap_or(Outcome {
                death: false,
                timey: 0.0,
            });
            let cell = if e.bio_age > e.age as f64 {
                &mut older
            } else {
                &mut younger
            };
            cell[0] += 1;
            cell[1] += o.death as u32;
        }
        let rate = |c: [u32; 2]| c[1] as f64 / c[0] as f64;
        assert!(
            rate(older) > 1.8 * rate(younger),
            "{older:?} vs {younger:?}"
        );
    }

    #[test]
    fn same_seed_same_cohort() {
        let a: Vec<ExamPlan> = Cohort::new(200, 9).exams().collect();
        let b: Vec<ExamPlan> = Cohort::new(200, 9).exams().collect();
        let c: Vec<ExamPlan> = Cohort::new(200, 10).exams().collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
