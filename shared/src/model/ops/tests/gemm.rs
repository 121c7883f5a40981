//! The safe `gemm` wrapper: products with transposed, strided and accumulated views against a
//! direct triple loop, and the refusal of views that leave their slice or overlap themselves.
use super::super::gemm::{MatMut, MatRef, Threads, matmul};
use super::uniform;

#[test]
fn strided_transposed_and_accumulated_products_match_a_triple_loop() {
    let (m, n, k) = (5, 7, 3);
    let a = uniform(k * m, 1); // stored (k, m): used transposed
    let b = uniform(k * n * 2, 2); // (k, n) with every other column
    let mut c = uniform(m * n, 3);
    let c0 = c.clone();
    for threads in [Threads::One, Threads::Pool] {
        c.copy_from_slice(&c0);
        let lhs = MatRef::rows(&a, k, m, m).t();
        let rhs = MatRef {
            data: &b,
            rows: k,
            cols: n,
            rs: 2 * n,
            cs: 2,
        };
        matmul(MatMut::rows(&mut c, m, n, n), lhs, rhs, true, threads).unwrap();
        for i in 0..m {
            for j in 0..n {
                let want = c0[i * n + j]
                    + (0..k)
                        .map(|p| a[p * m + i] * b[p * 2 * n + 2 * j])
                        .sum::<f64>();
                assert!(
                    (c[i * n + j] - want).abs() < 1e-12,
                    "({i}, {j}): {} vs {want}",
                    c[i * n + j]
                );
            }
        }
    }
    // Without accumulation the old contents are ignored.
    let lhs = MatRef::rows(&a, k, m, m).t();
    let rhs = MatRef {
        data: &b,
        rows: k,
        cols: n,
        rs: 2 * n,
        cs: 2,
    };
    matmul(MatMut::rows(&mut c, m, n, n), lhs, rhs, false, Threads::One).unwrap();
    let want = (0..k).map(|p| a[p * m] * b[p * 2 * n]).sum::<f64>();
    assert!((c[0] - want).abs() < 1e-12);
}

#[test]
fn views_outside_their_slice_or_overlapping_are_refused() {
    let a = vec![1.0f64; 12];
    let mut c = vec![0.0f64; 12];
    // lhs 3x4 needs 12 elements, rhs 4x3 with row stride 4 needs 15: refused.
    let lhs = MatRef::rows(&a, 3, 4, 4);
    let rhs = MatRef::rows(&a, 4, 3, 4);
    let err = matmul(MatMut::rows(&mut c, 3, 3, 3), lhs, rhs, false, Threads::One).unwrap_err();
    assert!(err.to_string().contains("rhs"), "{err}");
    // dst rows overlapping (row stride 1 < 3 columns): refused.
    let rhs = MatRef::rows(&a, 4, 3, 3);
    let dst = MatMut {
        data: &mut c,
        rows: 3,
        cols: 3,
        rs: 1,
        cs: 1,
    };
    let err = matmul(dst, lhs, rhs, false, Threads::One).unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
    // shapes that disagree: refused.
    let err = matmul(MatMut::rows(&mut c, 3, 4, 4), lhs, rhs, false, Threads::One).unwrap_err();
    assert!(err.to_string().contains("disagree"), "{err}");
    // dst too short.
    let err = matmul(
        MatMut::rows(&mut c[..8], 3, 3, 3),
        lhs,
        rhs,
        false,
        Threads::One,
    )
    .unwrap_err();
    assert!(err.to_string().contains("dst"), "{err}");
}

#[test]
fn an_empty_inner_dimension_zeroes_or_keeps_the_destination() {
    let a: Vec<f32> = Vec::new();
    let mut c = vec![5.0f32; 6];
    let lhs = MatRef::rows(&a, 2, 0, 0);
    let rhs = MatRef::rows(&a, 0, 3, 3);
    matmul(MatMut::rows(&mut c, 2, 3, 3), lhs, rhs, true, Threads::One).unwrap();
    assert_eq!(c, vec![5.0; 6]);
    matmul(MatMut::rows(&mut c, 2, 3, 3), lhs, rhs, false, Threads::One).unwrap();
    assert_eq!(c, vec![0.0; 6]);
}
