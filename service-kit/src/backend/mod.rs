//! What the consumer loop reads from and what the outbox relay and the dead
//! letters write to, as two small traits: a [`MessageSource`] (one member of a
//! consumer group) and a [`Publisher`] (a producer that reports each
//! acknowledgement).
//!
//! The services run on [`kafka`]. [`memory`] is a broker in the process, for
//! what needs the shipped consumer and relay without a broker: their unit
//! tests, and the benchmark's database-bound limit, which runs the four
//! services' real pipelines with the broker taken out.

use std::future::Future;

use crate::shutdown::Closing;

pub mod kafka;
pub mod memory;

/// A consumed message, owned, as the consumer loop handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Name and value of each header, in the order they were sent.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Received {
    /// The value of the first header called `name`, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| std::str::from_utf8(value.as_deref()?).ok())
    }

    /// The payload, or nothing.
    pub fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }
}

/// A header of an [`Outgoing`] message: its name and value.
pub type Header<'a> = (&'a str, Option<&'a [u8]>);

/// A message to publish.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Name and value of each header, in order.
    pub headers: &'a [Header<'a>],
}

/// One member of a consumer group: the messages of its partitions, in order,
/// and the record of how far it has dealt with them.
pub trait MessageSource: Send + Sync + 'static {
    /// Waits for the next message. A failure of the transport is the
    /// source's to report and wait out (Kafka's client reconnects by itself);
    /// what comes back is always a message.
    fn recv(&self) -> impl Future<Output = Received> + Send;

    /// The next message if one has already arrived; never waits.
    fn try_recv(&self) -> Option<Received>;

    /// `message` is dealt with: the group's position may move past it. Until
    /// that is committed, a restart delivers it again.
    fn store(&self, message: &Received);

    /// Commits what was stored and leaves the group. Both can block while the
    /// broker is unreachable, so they run on `closing`, which shutdown waits
    /// for only until its deadline; `owner` names the work in what a
    /// shutdown abandoned.
    fn close(self, closing: &Closing, owner: String);
}

/// A producer: each send resolves once the broker has the message for good.
/// Sends started one after another (their futures first polled in that
/// order) keep that order per key, so a batch may be sent with all its
/// acknowledgements awaited together.
pub trait Publisher: Send + Sync + 'static {
    fn send<'a>(
        &'a self,
        message: Outgoing<'a>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'a;

    /// Called after a round whose sends failed: a publisher whose client
    /// cannot recover by itself replaces it here. Nothing by default.
    fn recover(&mut self) {}
}
