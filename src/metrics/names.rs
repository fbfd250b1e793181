//! The metrics by name: [`Counter`], [`Gauge`] and [`Histogram`], each with a stable id (the C
//! ABI's), a snake-case name (JSON and Prometheus) and a one-line description.

macro_rules! metric_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $v:ident = $id:literal, $label:literal, $help:literal;)* }) => {
        $(#[$doc])*
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $v = $id,)*
        }

        impl $name {
            /// Every value, in id order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// The stable numeric id (used by the C ABI).
            pub fn id(self) -> u32 {
                self as u32
            }

            /// The value with a numeric id.
            pub fn from_id(id: u32) -> Option<$name> {
                Self::ALL.iter().copied().find(|m| m.id() == id)
            }

            /// The snake-case name used in JSON and Prometheus output.
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $label,)* }
            }

            /// The value with a name.
            pub fn from_name(name: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|m| m.name() == name)
            }

            /// A one-line description (the Prometheus `HELP`).
            pub fn help(self) -> &'static str {
                match self { $($name::$v => $help,)* }
            }
        }
    };
}

metric_enum! {
    /// A counter. Ids are stable; new ones are added at the end.
    Counter {
        /// Append attempts (events or batches), including failed ones.
        Appends = 0, "appends", "Append attempts, including failed ones.";
        /// Appends that failed.
        AppendErrors = 1, "append_errors", "Appends that failed.";
        /// Fetch attempts, including failed ones.
        Fetches = 2, "fetches", "Fetch attempts, including failed ones.";
        /// Fetches that failed.
        FetchErrors = 3, "fetch_errors", "Fetches that failed.";
        /// Wait (long-poll) attempts, including failed ones.
        Waits = 4, "waits", "Wait (long-poll) attempts, including failed ones.";
        /// Waits that failed.
        WaitErrors = 5, "wait_errors", "Waits that failed.";
        /// Waits that ended with an empty batch on timeout.
        WaitTimeouts = 6, "wait_timeouts", "Waits that ended empty on timeout.";
        /// Events delivered to clients.
        Deliveries = 7, "deliveries", "Events delivered to clients.";
        /// Rate-limit decisions that allowed the request.
        LimiterAllowed = 8, "limiter_allowed", "Rate-limit decisions that allowed the request.";
        /// Rate-limit decisions that refused the request.
        LimiterDenied = 9, "limiter_denied", "Rate-limit decisions that refused the request.";
        /// Rate-limit decisions refused by a DDoS block.
        LimiterBlocked = 10, "limiter_blocked", "Rate-limit decisions refused by a DDoS block.";
        /// Breaker checks that let the call through (including half-open probes).
        BreakerAllowed = 11, "breaker_allowed", "Breaker checks that let the call through.";
        /// Breaker checks refused because the breaker was open.
        BreakerRejected = 12, "breaker_rejected", "Breaker checks refused (open or probes taken).";
        /// Breakers that opened (tripped or re-opened).
        BreakerOpened = 13, "breaker_opened", "Breaker transitions to open.";
        /// Connection slots acquired.
        SlotsAcquired = 14, "slots_acquired", "Connection slots acquired.";
        /// Connection slot requests refused (all slots taken).
        SlotsRejected = 15, "slots_rejected", "Connection slot requests refused.";
        /// Leases taken over from a dead or expired holder, or evicted as the oldest.
        SlotsReclaimed = 16, "slots_reclaimed", "Leases reclaimed from dead, expired or evicted holders.";
        /// Signed publishes answered as replays of an earlier one, without appending (daemon).
        PublishReplays = 17, "publish_replays", "Signed publishes answered as replays, without appending.";
        /// Connections refused at accept: over the per-address cap, or over the daemon's
        /// capacity and its ops reserve (daemon).
        ConnectionsRefused = 18, "connections_refused", "Connections refused: over the per-address cap or the capacity.";
        /// Store calls that met a damaged page of the database file (`ErrorCode::Corrupt`).
        /// Any in the recent window makes the health `unavailable`.
        CorruptReads = 19, "corrupt_reads", "Store calls that met a damaged page of the database file.";
    }
}

metric_enum! {
    /// A gauge. Ids are stable; new ones are added at the end.
    Gauge {
        /// Long-polls waiting right now.
        ActiveWaits = 0, "active_waits", "Long-polls waiting now.";
        /// Open client connections (daemon).
        Connections = 1, "connections", "Open client connections.";
    }
}

metric_enum! {
    /// A latency histogram. Ids are stable; new ones are added at the end.
    Histogram {
        /// Time to append (until committed).
        Append = 0, "append", "Time to append an event until committed.";
        /// Time to fetch a batch.
        Fetch = 1, "fetch", "Time to fetch a batch.";
        /// Time a long-poll waited.
        Wait = 2, "wait", "Time a long-poll waited.";
        /// Time from an event's append to its delivery.
        Delivery = 3, "delivery", "Time from append to delivery.";
    }
}
