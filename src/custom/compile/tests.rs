use super::*;
use crate::custom::{Limits, parse::parse};

fn compile_with(
    src: &str,
    tensors: &[(&str, &[usize])],
    grad: &[usize],
) -> Result<Graph, ExprError> {
    let ast = parse(src, &Limits::default())?;
    let t: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect();
    compile(src, &ast, &t, grad)
}

fn shape_of(src: &str) -> Vec<usize> {
    let g = compile_with(src, &[("x", &[2, 3]), ("y", &[3]), ("z", &[])], &[0])
        .unwrap_or_else(|e| panic!("{src}: {e}"));
    g.nodes[g.root].shape.clone()
}

fn error(src: &str) -> ExprError {
    compile_with(src, &[("x", &[2, 3]), ("y", &[3]), ("t", &[2])], &[0]).expect_err(src)
}

#[test]
fn shapes_are_inferred_before_computing() {
    assert_eq!(shape_of("x + y"), vec![2, 3]);
    assert_eq!(shape_of("x * z"), vec![2, 3]);
    assert_eq!(shape_of("sum(x)"), Vec::<usize>::new());
    assert_eq!(shape_of("sum(x, 1)"), vec![2]);
    assert_eq!(shape_of("mean(x, dim=-1, keepdim=True)"), vec![2, 1]);
    assert_eq!(shape_of("max(x, keepdim=True)"), vec![1, 1]);
    assert_eq!(shape_of("logsumexp(x, 0)"), vec![3]);
    assert_eq!(shape_of("softmax(x, -1)"), vec![2, 3]);
    assert_eq!(shape_of("where(x > 0, x, y)"), vec![2, 3]);
    assert_eq!(shape_of("clamp(x, 0, 1)"), vec![2, 3]);
    assert_eq!(shape_of("clamp(y, min=x)"), vec![2, 3]);
    assert_eq!(shape_of("sum(z, 0)"), Vec::<usize>::new());
    assert_eq!(shape_of("2 * 3"), Vec::<usize>::new());
    assert_eq!(shape_of("mse_loss(x, y, reduction='none')"), vec![2, 3]);
    assert_eq!(shape_of("huber_loss(x, y)"), Vec::<usize>::new());
    assert_eq!(
        shape_of("cross_entropy(x, sum(x, 1), reduction='none')"),
        vec![2]
    );
}

#[test]
fn grad_flags_follow_the_tensors_of_grad() {
    let g = compile_with("sum(x * y) + sum(y)", &[("x", &[3]), ("y", &[3])], &[0]).unwrap();
    assert!(g.nodes[g.root].grad);
    let y = g.leaves[1].unwrap();
    assert!(!g.nodes[y].grad);
    let g = compile_with("(x > 0) * 2", &[("x", &[3])], &[0]).unwrap();
    assert!(!g.nodes[g.root].grad, "comparisons stop gradients");
}

#[test]
fn errors_name_what_is_wrong_and_where() {
    let e = error("x + t");
    assert_eq!(e.code, Code::ShapeMismatch);
    assert!(
        e.message.contains("`x + t`") && e.message.contains("[2]"),
        "{}",
        e.message
    );
    let e = error("foo(x)");
    assert_eq!((e.code, e.position), (Code::InvalidExpression, 0));
    assert!(e.message.contains("unknown function"));
    let e = error("x + w");
    assert_eq!(e.position, 4);
    assert!(e.message.contains("unknown name `w`") && e.message.contains("x, y, t"));
    let e = error("x + mean");
    assert!(e.message.contains("call it with parentheses"));
    let e = error("sum(x, 2)");
    assert_eq!((e.code, e.position), (Code::ShapeMismatch, 7));
    assert!(e.message.contains("dim 2 does not exist"), "{}", e.message);
    assert!(error("sum(x, -3)").message.contains("[-2, 1]"));
    assert!(error("sum(x, 1.5)").message.contains("integer"));
    assert!(error("sum(x, 1, 'yes')").message.contains("True or False"));
    assert!(error("exp(x, y)").message.contains("at most 1"));
    assert!(error("exp()").message.contains("missing"));
    assert!(
        error("mean(x, axis=1)")
            .message
            .contains("no argument `axis`")
    );
    assert!(error("mean(x, 1, dim=1)").message.contains("both"));
    assert!(error("max(x, y)").message.contains("maximum(a, b)"));
    assert!(error("x + 'a'").message.contains("found a string"));
    assert!(error("clamp(x)").message.contains("at least one"));
    assert!(error("softmax(x)").message.contains("missing"));
    let e = error("huber_loss(x, y, delta='big')");
    assert!(e.message.contains("must be a number"), "{}", e.message);
    let e = error("huber_loss(x, y, reduction='avg')");
    assert!(e.message.contains("'none', 'mean', 'sum'"), "{}", e.message);
    let e = error("huber_loss(x, y, beta=1)");
    assert!(e.message.contains("no argument `beta`") && e.message.contains("delta"));
    let e = error("huber_loss(x, y, x, x)");
    assert!(e.message.contains("by keyword"));
    let e = error("huber_loss(x)");
    assert!(e.message.contains("missing its tensor `target`"));
    let e = error("huber_loss(x, y, dtype='float32')");
    assert!(e.message.contains("whole request"));
    let e = error("nll_loss(x, x)");
    assert!(e.message.contains("not differentiable"), "{}", e.message);
}

#[test]
fn empty_max_is_refused_statically() {
    let e = compile_with("max(x)", &[("x", &[0, 3])], &[]).unwrap_err();
    assert_eq!(e.code, Code::ShapeMismatch);
    let e = compile_with("min(x, 0)", &[("x", &[0, 3])], &[]).unwrap_err();
    assert_eq!(e.code, Code::ShapeMismatch);
    assert!(compile_with("max(x, 1)", &[("x", &[0, 3])], &[]).is_ok());
    assert!(compile_with("sum(x) + logsumexp(x) + mean(x)", &[("x", &[0, 3])], &[]).is_ok());
}

#[test]
fn cost_counts_the_elements_every_operation_touches() {
    let g = compile_with(
        "mean(square(x - y))",
        &[("x", &[10, 10]), ("y", &[10, 10])],
        &[],
    )
    .unwrap();
    // sub 100, square 100, mean 100 + 1.
    assert_eq!(g.cost, 301);
    let g = compile_with("x * y", &[("x", &[1_000_000, 1]), ("y", &[1_000_000])], &[]).unwrap();
    assert_eq!(g.cost, 1_000_000_000_000);
}
