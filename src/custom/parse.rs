//! The expression language's lexer and Pratt parser.
//!
//! The parser produces a flat arena of [`Syn`] nodes in postfix order (every node after the
//! nodes it refers to), so everything downstream walks it with loops. The parser's own
//! recursion (one level per nested operand, parenthesis or call argument) is bounded by an
//! explicit depth counter checked on entry, and the node count and the expression's length are
//! checked as it goes: no input, however hostile, can overflow the stack or run long.
//!
//! Precedence, loosest first: comparisons (`< <= > >= == !=`, not chainable), then `+ -`,
//! then `* /`, then unary `-` / `+`, then `^` (also spelled `**`), right-associative and
//! binding tighter than unary minus on its left (`-x^2` is `-(x^2)`, `2^-x` is `2^(-x)`, as
//! Python's `**`).

use std::fmt;

use super::{ExprError, Limits};

/// A byte range of the expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    fn to(self, other: Span) -> Span {
        Span {
            start: self.start,
            end: other.end,
        }
    }
}

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `^` or `**`
    Pow,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl BinOp {
    /// Whether this is a comparison.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }

    /// The operator's text.
    pub fn text(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
        }
    }

    /// Left and right binding powers (left < right: left-associative).
    fn binding(self) -> (u8, u8) {
        match self {
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => (1, 2),
            BinOp::Add | BinOp::Sub => (3, 4),
            BinOp::Mul | BinOp::Div => (5, 6),
            BinOp::Pow => (9, 8),
        }
    }
}

/// The binding power of a prefix `-` or `+`: tighter than `*`, looser than `^`.
const UNARY: u8 = 7;

/// A keyword or positional argument of a call.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// `name=` and where the name is, for a keyword argument.
    pub keyword: Option<(String, Span)>,
    /// The argument's node.
    pub value: usize,
}

/// A syntax node.
#[derive(Clone, Debug, PartialEq)]
pub enum SynKind {
    /// A number literal (also `inf` and `nan`).
    Num(f64),
    /// A string literal, `'...'` or `"..."`.
    Str(String),
    /// `True` / `False` (also lowercase).
    Bool(bool),
    /// `None`.
    NoneLit,
    /// A tensor's name.
    Name(String),
    /// Unary minus.
    Neg(usize),
    /// A binary operation.
    Bin(BinOp, usize, usize),
    /// `name(args)`.
    Call {
        /// The function's name.
        name: String,
        /// Where the name is.
        name_span: Span,
        /// The arguments, in order.
        args: Vec<Arg>,
    },
}

/// A syntax node and the text it spans.
#[derive(Clone, Debug, PartialEq)]
pub struct Syn {
    /// What it is.
    pub kind: SynKind,
    /// Where it is.
    pub span: Span,
}

/// A parsed expression: the arena (postfix order) and the root.
#[derive(Clone, Debug)]
pub struct Ast {
    /// Every node, each after the nodes it refers to.
    pub nodes: Vec<Syn>,
    /// The whole expression's node.
    pub root: usize,
}

/// Names that are literals, never tensors.
pub const RESERVED: [&str; 9] = [
    "True", "False", "true", "false", "None", "inf", "nan", "Infinity", "NaN",
];

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Ident,
    Str(String),
    LParen,
    RParen,
    Comma,
    Assign,
    Op(BinOp),
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Tok::Num(_) => f.write_str("a number"),
            Tok::Ident => f.write_str("a name"),
            Tok::Str(_) => f.write_str("a string"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Assign => f.write_str("`=`"),
            Tok::Op(op) => write!(f, "`{}`", op.text()),
            Tok::End => f.write_str("the end of the expression"),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    span: Span,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, at: usize, msg: String) -> ExprError {
        ExprError::syntax(self.src, at, msg)
    }

    fn next(&mut self) -> Result<Token, ExprError> {
        let b = self.src.as_bytes();
        while self.pos < b.len() && b[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&c) = b.get(start) else {
            return Ok(Token {
                tok: Tok::End,
                span: Span { start, end: start },
            });
        };
        let two = b.get(start + 1).copied();
        let (tok, len) = match c {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b',' => (Tok::Comma, 1),
            b'+' => (Tok::Op(BinOp::Add), 1),
            b'-' => (Tok::Op(BinOp::Sub), 1),
            b'*' if two == Some(b'*') => (Tok::Op(BinOp::Pow), 2),
            b'*' => (Tok::Op(BinOp::Mul), 1),
            b'/' => (Tok::Op(BinOp::Div), 1),
            b'^' => (Tok::Op(BinOp::Pow), 1),
            b'<' if two == Some(b'=') => (Tok::Op(BinOp::Le), 2),
            b'<' => (Tok::Op(BinOp::Lt), 1),
            b'>' if two == Some(b'=') => (Tok::Op(BinOp::Ge), 2),
            b'>' => (Tok::Op(BinOp::Gt), 1),
            b'=' if two == Some(b'=') => (Tok::Op(BinOp::Eq), 2),
            b'=' => (Tok::Assign, 1),
            b'!' if two == Some(b'=') => (Tok::Op(BinOp::Ne), 2),
            b'\'' | b'"' => {
                let Some(len) = self.src[start + 1..].find(c as char) else {
                    return Err(self.err(start, "this string is never closed".into()));
                };
                let text = self.src[start + 1..start + 1 + len].to_string();
                (Tok::Str(text), len + 2)
            }
            b'0'..=b'9' | b'.' => {
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'.') {
                    end += 1;
                }
                if end < b.len() && (b[end] == b'e' || b[end] == b'E') {
                    let mut e = end + 1;
                    if e < b.len() && (b[e] == b'+' || b[e] == b'-') {
                        e += 1;
                    }
                    if e < b.len() && b[e].is_ascii_digit() {
                        while e < b.len() && b[e].is_ascii_digit() {
                            e += 1;
                        }
                        end = e;
                    }
                }
                let text = &self.src[start..end];
                let v: f64 = text
                    .parse()
                    .map_err(|_| self.err(start, format!("`{text}` is not a number")))?;
                (Tok::Num(v), end - start)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                (Tok::Ident, end - start)
            }
            _ => {
                let ch = self.src[start..].chars().next().unwrap_or(' ');
                return Err(self.err(
                    start,
                    format!(
                        "unexpected character `{ch}`: expected a number, a name, an operator \
                         (+ - * / ^ < <= > >= == !=), `(`, `)`, `,` or `=`"
                    ),
                ));
            }
        };
        self.pos = start + len;
        Ok(Token {
            tok,
            span: Span {
                start,
                end: start + len,
            },
        })
    }
}

struct Parser<'a> {
    src: &'a str,
    lexer: Lexer<'a>,
    peeked: Vec<Token>,
    nodes: Vec<Syn>,
    limits: &'a Limits,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Result<&Token, ExprError> {
        if self.peeked.is_empty() {
            let t = self.lexer.next()?;
            self.peeked.push(t);
        }
        Ok(&self.peeked[self.peeked.len() - 1])
    }

    /// The token after the next one (two tokens of look-ahead, for `name=`).
    fn peek2(&mut self) -> Result<Tok, ExprError> {
        self.peek()?;
        if self.peeked.len() < 2 {
            let t = self.lexer.next()?;
            self.peeked.insert(0, t);
        }
        Ok(self.peeked[0].tok.clone())
    }

    fn bump(&mut self) -> Result<Token, ExprError> {
        self.peek()?;
        Ok(self.peeked.pop().expect("peeked"))
    }

    fn err(&self, at: usize, msg: String) -> ExprError {
        ExprError::syntax(self.src, at, msg)
    }

    fn push(&mut self, kind: SynKind, span: Span) -> Result<usize, ExprError> {
        if self.nodes.len() >= self.limits.max_nodes {
            return Err(self.err(
                span.start,
                format!(
                    "the expression has more than {} nodes (the node limit)",
                    self.limits.max_nodes
                ),
            ));
        }
        self.nodes.push(Syn { kind, span });
        Ok(self.nodes.len() - 1)
    }

    fn expect(&mut self, want: Tok, context: &str) -> Result<Token, ExprError> {
        let t = self.bump()?;
        if t.tok == want {
            Ok(t)
        } else {
            Err(self.err(
                t.span.start,
                format!("expected {want} {context}, found {}", t.tok),
            ))
        }
    }

    /// An expression whose operators bind at least `min_bp`, `depth` levels deep.
    fn expr(&mut self, min_bp: u8, depth: usize) -> Result<usize, ExprError> {
        if depth > self.limits.max_depth {
            let at = self.peek()?.span.start;
            return Err(self.err(
                at,
                format!(
                    "the expression is nested more than {} levels deep (the depth limit)",
                    self.limits.max_depth
                ),
            ));
        }
        let mut lhs = self.prefix(depth)?;
        let mut compared = false;
        loop {
            let t = self.peek()?.clone();
            let Tok::Op(op) = t.tok else { break };
            let (l, r) = op.binding();
            if l < min_bp {
                break;
            }
            if op.is_comparison() && compared {
                return Err(self.err(
                    t.span.start,
                    format!(
                        "comparisons cannot be chained: `{}` follows another comparison; \
                         use parentheses",
                        op.text()
                    ),
                ));
            }
            self.bump()?;
            let rhs = self.expr(r, depth + 1)?;
            let span = self.nodes[lhs].span.to(self.nodes[rhs].span);
            lhs = self.push(SynKind::Bin(op, lhs, rhs), span)?;
            compared = op.is_comparison();
        }
        Ok(lhs)
    }

    fn prefix(&mut self, depth: usize) -> Result<usize, ExprError> {
        let t = self.bump()?;
        match t.tok {
            Tok::Num(v) => self.push(SynKind::Num(v), t.span),
            Tok::Str(s) => self.push(SynKind::Str(s), t.span),
            Tok::Op(BinOp::Sub) => {
                let operand = self.expr(UNARY, depth + 1)?;
                let span = t.span.to(self.nodes[operand].span);
                self.push(SynKind::Neg(operand), span)
            }
            Tok::Op(BinOp::Add) => {
                let operand = self.expr(UNARY, depth + 1)?;
                self.nodes[operand].span.start = t.span.start;
                Ok(operand)
            }
            Tok::LParen => {
                let inner = self.expr(0, depth + 1)?;
                let close = self.expect(Tok::RParen, "to close the `(`")?;
                self.nodes[inner].span = t.span.to(close.span);
                Ok(inner)
            }
            Tok::Ident => {
                let name = &self.src[t.span.start..t.span.end];
                let literal = match name {
                    "True" | "true" => Some(SynKind::Bool(true)),
                    "False" | "false" => Some(SynKind::Bool(false)),
                    "None" => Some(SynKind::NoneLit),
                    "inf" | "Infinity" => Some(SynKind::Num(f64::INFINITY)),
                    "nan" | "NaN" => Some(SynKind::Num(f64::NAN)),
                    _ => None,
                };
                if let Some(kind) = literal {
                    return self.push(kind, t.span);
                }
                let name = name.to_string();
                if self.peek()?.tok == Tok::LParen {
                    self.call(name, t.span, depth)
                } else {
                    self.push(SynKind::Name(name), t.span)
                }
            }
            other => Err(self.err(
                t.span.start,
                format!(
                    "expected a number, a tensor's name, a function call, `(` or `-`, found {other}"
                ),
            )),
        }
    }

    fn call(&mut self, name: String, name_span: Span, depth: usize) -> Result<usize, ExprError> {
        self.bump()?; // `(`
        let mut args: Vec<Arg> = Vec::new();
        let close = loop {
            if self.peek()?.tok == Tok::RParen {
                break self.bump()?;
            }
            let t = self.peek()?.clone();
            let keyword = if t.tok == Tok::Ident && self.peek2()? == Tok::Assign {
                self.bump()?;
                self.bump()?;
                let kw = self.src[t.span.start..t.span.end].to_string();
                if args
                    .iter()
                    .any(|a| a.keyword.as_ref().is_some_and(|(k, _)| *k == kw))
                {
                    return Err(self.err(
                        t.span.start,
                        format!("keyword argument `{kw}` is given twice in the call of {name}()"),
                    ));
                }
                Some((kw, t.span))
            } else {
                if args.iter().any(|a| a.keyword.is_some()) {
                    return Err(self.err(
                        t.span.start,
                        format!(
                            "a positional argument follows a keyword argument in the call of {name}()"
                        ),
                    ));
                }
                None
            };
            let value = self.expr(0, depth + 1)?;
            args.push(Arg { keyword, value });
            let t = self.bump()?;
            match t.tok {
                Tok::Comma => {}
                Tok::RParen => break t,
                other => {
                    return Err(self.err(
                        t.span.start,
                        format!("expected `,` or `)` in the arguments of {name}(), found {other}"),
                    ));
                }
            }
        };
        self.push(
            SynKind::Call {
                name,
                name_span,
                args,
            },
            name_span.to(close.span),
        )
    }
}

/// Parses `src` under `limits`.
pub fn parse(src: &str, limits: &Limits) -> Result<Ast, ExprError> {
    // Bytes bound characters from above: only a long text needs counting.
    if src.len() > limits.max_chars && src.chars().count() > limits.max_chars {
        return Err(ExprError::syntax(
            src,
            limits.max_chars,
            format!(
                "the expression is longer than {} characters (the length limit)",
                limits.max_chars
            ),
        ));
    }
    let mut p = Parser {
        src,
        lexer: Lexer { src, pos: 0 },
        peeked: Vec::new(),
        nodes: Vec::new(),
        limits,
    };
    if p.peek()?.tok == Tok::End {
        return Err(p.err(0, "the expression is empty".into()));
    }
    let root = p.expr(0, 0)?;
    let t = p.bump()?;
    if t.tok != Tok::End {
        return Err(p.err(
            t.span.start,
            format!(
                "expected an operator or the end of the expression, found {}",
                t.tok
            ),
        ));
    }
    Ok(Ast {
        nodes: p.nodes,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(ast: &Ast, i: usize) -> String {
        match &ast.nodes[i].kind {
            SynKind::Num(v) => format!("{v}"),
            SynKind::Str(s) => format!("'{s}'"),
            SynKind::Bool(b) => format!("{b}"),
            SynKind::NoneLit => "None".into(),
            SynKind::Name(n) => n.clone(),
            SynKind::Neg(a) => format!("(-{})", show(ast, *a)),
            SynKind::Bin(op, a, b) => {
                format!("({} {} {})", show(ast, *a), op.text(), show(ast, *b))
            }
            SynKind::Call { name, args, .. } => {
                let args: Vec<String> = args
                    .iter()
                    .map(|a| match &a.keyword {
                        Some((k, _)) => format!("{k}={}", show(ast, a.value)),
                        None => show(ast, a.value),
                    })
                    .collect();
                format!("{name}({})", args.join(", "))
            }
        }
    }

    fn p(src: &str) -> String {
        let ast = parse(src, &Limits::default()).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        show(&ast, ast.root)
    }

    fn bad(src: &str) -> ExprError {
        parse(src, &Limits::default()).expect_err(src)
    }

    #[test]
    fn precedence_is_python_like() {
        assert_eq!(p("a + b * c"), "(a + (b * c))");
        assert_eq!(p("a - b - c"), "((a - b) - c)");
        assert_eq!(p("a / b * c"), "((a / b) * c)");
        assert_eq!(p("-x^2"), "(-(x ^ 2))");
        assert_eq!(p("-x**2"), "(-(x ^ 2))");
        assert_eq!(p("a^b^c"), "(a ^ (b ^ c))");
        assert_eq!(p("2^-x"), "(2 ^ (-x))");
        assert_eq!(p("-a * b"), "((-a) * b)");
        assert_eq!(p("a + b < c * d"), "((a + b) < (c * d))");
        assert_eq!(p("(a < b) < c"), "((a < b) < c)");
        assert_eq!(p("+a"), "a");
        assert_eq!(p("--a"), "(-(-a))");
    }

    #[test]
    fn calls_take_positional_then_keyword_arguments() {
        assert_eq!(
            p("huber_loss(x, y, delta=0.5, reduction='none')"),
            "huber_loss(x, y, delta=0.5, reduction='none')"
        );
        assert_eq!(
            p("sum(x, dim=-1, keepdim=True)"),
            "sum(x, dim=(-1), keepdim=true)"
        );
        assert_eq!(p("f()"), "f()");
        assert_eq!(p("f(a,)"), "f(a)");
        assert_eq!(p("clamp(x, None, 1e-3)"), "clamp(x, None, 0.001)");
        assert_eq!(p("f(a == b)"), "f((a == b))");
        assert_eq!(p("mean(x) * .5 + 1.e2"), "((mean(x) * 0.5) + 100)");
    }

    #[test]
    fn errors_carry_the_character_position() {
        let e = bad("a + * b");
        assert_eq!(e.position, 4);
        assert!(e.message.contains("expected a number"), "{}", e.message);
        let e = bad("(a + b");
        assert_eq!(e.position, 6);
        assert!(e.message.contains("`)`"));
        let e = bad("a b");
        assert_eq!(e.position, 2);
        let e = bad("f(x=1, y)");
        assert!(e.message.contains("positional argument follows"));
        let e = bad("f(x=1, x=2)");
        assert_eq!(e.position, 7);
        let e = bad("a < b < c");
        assert!(e.message.contains("chained"));
        let e = bad("a $ b");
        assert_eq!(e.position, 2);
        let e = bad("é + $");
        assert_eq!(e.position, 0);
        let e = bad("'abc");
        assert!(e.message.contains("never closed"));
        let e = bad("x + 'é' $");
        assert_eq!(e.position, 8, "positions count characters, not bytes");
        let e = bad("   ");
        assert!(e.message.contains("empty"));
        let e = bad("1.2.3");
        assert!(e.message.contains("not a number"));
    }

    #[test]
    fn limits_hold_without_deep_recursion() {
        let deep = format!("{}x{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(bad(&deep).message.contains("length limit"));
        let roomy = Limits {
            max_chars: usize::MAX,
            ..Limits::default()
        };
        for deep in [
            format!("{}x{}", "(".repeat(1_000_000), ")".repeat(1_000_000)),
            format!("{}x", "-".repeat(1_000_000)),
            format!("{}x", "f(".repeat(1_000_000)),
            format!("x{}", "^x".repeat(1_000_000)),
        ] {
            let e = parse(&deep, &roomy).unwrap_err();
            assert!(e.message.contains("depth limit"), "{}", e.message);
        }
        let negs = format!("{}x", "-".repeat(100_000));
        assert!(bad(&negs).message.contains("length limit"));
        let negs = format!("{}x", "-".repeat(5_000));
        assert!(bad(&negs).message.contains("depth limit"));
        let long = "x + ".repeat(300_000) + "x";
        assert!(bad(&long).message.contains("length limit"));
        let many = "x + ".repeat(1_500) + "x";
        assert!(bad(&many).message.contains("node limit"));
        // Left-associative chains are loops, not nesting: 500 terms are fine.
        let chain = "x + ".repeat(499) + "x";
        assert!(parse(&chain, &Limits::default()).is_ok());
        let tight = Limits {
            max_chars: 5,
            max_nodes: 3,
            max_depth: 2,
        };
        assert!(parse("a+b+c", &tight).is_err());
        assert!(parse("a+b", &tight).is_ok());
        assert!(parse("((a))", &tight).is_ok());
        assert!(parse("(((a)))", &tight).is_err());
    }
}
