//! Test-only switches that turn a safety rule off, so that the simulation
//! (`crate::sim`) can prove it catches what the rule prevents. They exist
//! in test builds only: a release build has no way to turn a rule off.
//! Thread-local, so parallel tests do not see each other's switches.

#[cfg(test)]
use std::cell::Cell;

/// A safety rule the simulation may turn off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The lease gate (rule 9): the candidate becomes writable without
    /// waiting for the old primary to be fenced.
    LeaseGate,
}

#[cfg(test)]
thread_local! {
    static OFF: Cell<Option<Rule>> = const { Cell::new(None) };
}

/// Whether `rule` is switched off (never in a release build).
pub fn is_off(rule: Rule) -> bool {
    #[cfg(test)]
    {
        OFF.with(|o| o.get() == Some(rule))
    }
    #[cfg(not(test))]
    {
        let _ = rule;
        false
    }
}

/// Switches `rule` off for this thread until the guard is dropped.
#[cfg(test)]
pub fn switch_off(rule: Rule) -> impl Drop {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            OFF.with(|o| o.set(None));
        }
    }
    OFF.with(|o| o.set(Some(rule)));
    Guard
}
