//! The names a deferred expression sees at run time: `steps.<name>.outputs.<key>`,
//! `env.<VAR>`, `secrets.<NAME>`, `run.id` / `run.status` / `run.failed_step`,
//! and the impure functions `now()` and `env(name)`.

use indexmap::IndexMap;
use pipe_lang::eval::{Lookup, Scope};
use pipe_lang::Value;

/// What the scope knows about one finished step.
#[derive(Clone, Debug, Default)]
pub struct StepView {
    pub id: String,
    pub stage: String,
    pub name: String,
    pub status: String,
    pub outputs: IndexMap<String, String>,
    pub exit_code: Option<i32>,
}

/// Finds a step by id (`stage.name`) or, failing that, by bare name.
pub type FindStep<'a> = &'a dyn Fn(&str) -> Option<StepView>;

pub struct RunScope<'a> {
    pub find: FindStep<'a>,
    pub stages: &'a [String],
    pub env: &'a IndexMap<String, String>,
    pub run: &'a IndexMap<String, Value>,
    /// Every `secrets.NAME` resolved, as (name, value): the scheduler
    /// registers them with the run's masker before a step uses them.
    pub secrets_used: &'a std::cell::RefCell<Vec<(String, String)>>,
    /// Where `secrets.NAME` values come from (file, directory, environment).
    pub secrets: &'a crate::secrets::Secrets,
    /// The environment whose own secrets the step sees (its stage's `env`,
    /// else the run's `--env`); another environment's are never visible.
    pub secret_env: Option<&'a str>,
}

impl RunScope<'_> {
    fn step_value(s: &StepView) -> Value {
        let mut m = IndexMap::new();
        m.insert(
            "outputs".to_string(),
            Value::Map(
                s.outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
                    .collect(),
            ),
        );
        m.insert("status".to_string(), Value::Str(s.status.clone()));
        m.insert(
            "exit_code".to_string(),
            s.exit_code
                .map_or(Value::Null, |c| Value::Int(i64::from(c))),
        );
        Value::Map(m)
    }
}

impl Scope for RunScope<'_> {
    fn lookup(&self, root: &str, keys: &[Value]) -> Lookup {
        let key = |i: usize| keys.get(i).and_then(Value::as_str);
        match root {
            "steps" => {
                // `steps.stage.name` or `steps.name`, as lowering resolves them.
                if let (Some(a), Some(b)) = (key(0), key(1)) {
                    if b != "outputs" && self.stages.iter().any(|s| s == a) {
                        if let Some(s) = (self.find)(&format!("{a}.{b}")) {
                            return Lookup::Found(Self::step_value(&s), 2);
                        }
                    }
                }
                match key(0).and_then(|n| (self.find)(n)) {
                    Some(s) => Lookup::Found(Self::step_value(&s), 1),
                    None => Lookup::Missing,
                }
            }
            "env" => match key(0) {
                Some(k) => match self.env.get(k).cloned().or_else(|| std::env::var(k).ok()) {
                    Some(v) => Lookup::Found(Value::Str(v), 1),
                    None => Lookup::Found(Value::Null, 1),
                },
                None => Lookup::Found(
                    Value::Map(
                        self.env
                            .iter()
                            .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
                            .collect(),
                    ),
                    0,
                ),
            },
            "secrets" => {
                match key(0).and_then(|k| Some((k, self.secrets.get_in(self.secret_env, k)?.0))) {
                    Some((k, v)) => {
                        self.secrets_used
                            .borrow_mut()
                            .push((k.to_string(), v.clone()));
                        Lookup::Found(Value::Str(v), 1)
                    }
                    None => Lookup::Missing,
                }
            }
            "run" => Lookup::Found(Value::Map(self.run.clone()), 0),
            // `chaos.NAME.url`: the outputs of the chaos block NAME.
            "chaos" => match key(0).and_then(|n| (self.find)(n)) {
                Some(s) => Lookup::Found(
                    Value::Map(
                        s.outputs
                            .iter()
                            .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
                            .collect(),
                    ),
                    1,
                ),
                None => Lookup::Missing,
            },
            _ => Lookup::Missing,
        }
    }

    fn call_impure(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        match name {
            "now" => Some(Ok(Value::Str(crate::time::rfc3339(crate::state::now_ms())))),
            "env" => Some(match args.first().and_then(Value::as_str) {
                Some(k) => Ok(std::env::var(k).map_or(Value::Null, Value::Str)),
                None => Err("env() takes a variable name".into()),
            }),
            _ => None,
        }
    }
}
