//! Blixt node agent.
