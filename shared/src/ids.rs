//! Newtypes for the ids of the CODE tables, so that an exam id is never passed where a patient
//! id is expected.
//!
//! ```compile_fail
//! use ecg_shared::ids::{ExamId, PatientId};
//! fn patient(p: PatientId) -> i64 { p.0 }
//! patient(ExamId(3));
//! ```
use std::fmt;

/// An exam id (`exam_id` in CODE-15%, `N_exame` in the full CODE table). 0 marks HDF5 padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExamId(pub i64);

/// A patient id (`patient_id` in CODE-15%, `N_paciente_univoco` in the full CODE table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatientId(pub i64);

impl fmt::Display for ExamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
