//! The accounts aggregate (issue 11 §3): a wallet per customer. Commands on
//! [`ACCOUNT_COMMANDS`] (`shop.accounts.commands`), events on [`ACCOUNTS`]
//! (`shop.accounts`), every one keyed by `account_id`; `shop accounts` runs it on the
//! choreography engine through herald-aggregate.
//!
//! Rules: `OpenAccount` opens a wallet at 0 (`already-open` the second time); `Deposit`
//! and `Withdraw` need an open account (`no-such-account`) and an amount above 0
//! (`invalid-amount`, also for a `Deposit` the balance cannot hold: above `i64::MAX` cents);
//! a `Withdraw` above the balance is `insufficient-funds`. The balance is never negative.

use apache_avro::AvroSchema;
use herald_aggregate::{Aggregate, Rejection};
use herald_bus::Topic;
use serde::{Deserialize, Serialize};

/// The accounts' commands, keyed by account.
pub const ACCOUNT_COMMANDS: Topic<AccountCommand> = Topic::new("shop.accounts.commands");
/// The accounts' events, keyed by account.
pub const ACCOUNTS: Topic<AccountEvent> = Topic::new("shop.accounts");
/// The reply topic the shop's clients use.
pub const ACCOUNT_REPLIES: &str = "shop.accounts.replies";

/// Implements [`herald_bus::Event`] for an accounts record keyed by `account_id`.
macro_rules! account_record {
    ($type:ty, $name:literal, $path:literal) => {
        impl herald_bus::Event for $type {
            const TYPE: &'static str = $name;
            const SCHEMA: &'static str = include_str!(concat!("../../../schemas/shop/accounts/", $path));
            fn aggregate_id(&self) -> &str {
                &self.account_id
            }
        }
    };
}

/// Command: open the wallet `account_id` for `owner`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.accounts")]
pub struct OpenAccount {
    /// The account.
    pub account_id: String,
    /// Its owner (a customer id).
    pub owner: String,
}
account_record!(OpenAccount, "shop.accounts.OpenAccount", "OpenAccount/v1.avsc");

/// Command: add `amount_cents` (above 0) to `account_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.accounts")]
pub struct Deposit {
    /// The account.
    pub account_id: String,
    /// Amount in minor units.
    pub amount_cents: i64,
}
account_record!(Deposit, "shop.accounts.Deposit", "Deposit/v1.avsc");

/// Command: take `amount_cents` (above 0, at most the balance) from `account_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.accounts")]
pub struct Withdraw {
    /// The account.
    pub account_id: String,
    /// Amount in minor units.
    pub amount_cents: i64,
}
account_record!(Withdraw, "shop.accounts.Withdraw", "Withdraw/v1.avsc");

herald_bus::family! {
    /// Every command on [`ACCOUNT_COMMANDS`].
    #[derive(Debug, Clone, PartialEq)]
    pub enum AccountCommand {
        /// See [`OpenAccount`].
        Open(OpenAccount),
        /// See [`Deposit`].
        Deposit(Deposit),
        /// See [`Withdraw`].
        Withdraw(Withdraw),
    }
}

/// The wallet `account_id` was opened for `owner`, at 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.accounts")]
pub struct AccountOpened {
    /// The account.
    pub account_id: String,
    /// Its owner.
    pub owner: String,
}
account_record!(AccountOpened, "shop.accounts.AccountOpened", "AccountOpened/v1.avsc");

/// `amount_cents` were added to `account_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.accounts")]
pub struct MoneyDeposited {
    /// The account.
    pub account_id: String,
    /// Amount in minor units.
    pub amount_cents: i64,
}
account_record!(MoneyDeposited, "shop.accounts.MoneyDeposited", "MoneyDeposited/v1.avsc");

/// `amount_cents` were taken from `account_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.accounts")]
pub struct MoneyWithdrawn {
    /// The account.
    pub account_id: String,
    /// Amount in minor units.
    pub amount_cents: i64,
}
account_record!(MoneyWithdrawn, "shop.accounts.MoneyWithdrawn", "MoneyWithdrawn/v1.avsc");

herald_bus::family! {
    /// Every event on [`ACCOUNTS`] (untagged: each serializes as itself).
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[serde(untagged)]
    pub enum AccountEvent {
        /// See [`AccountOpened`].
        Opened(AccountOpened),
        /// See [`MoneyDeposited`].
        Deposited(MoneyDeposited),
        /// See [`MoneyWithdrawn`].
        Withdrawn(MoneyWithdrawn),
    }
}

/// One wallet: opened or not, its owner and balance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.accounts")]
pub struct Wallet {
    /// Whether `OpenAccount` was accepted.
    pub open: bool,
    /// The owner (empty before it opened).
    pub owner: String,
    /// The balance in minor units (never negative).
    pub balance_cents: i64,
}

/// The accounts aggregate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accounts;

/// Rejection reasons.
pub mod reason {
    /// A withdrawal above the balance.
    pub const INSUFFICIENT_FUNDS: &str = "insufficient-funds";
    /// A deposit or withdrawal on an account not opened.
    pub const NO_SUCH_ACCOUNT: &str = "no-such-account";
    /// A second `OpenAccount`.
    pub const ALREADY_OPEN: &str = "already-open";
    /// An amount of 0 or less, or a deposit that would take the balance above `i64::MAX`
    /// cents.
    pub const INVALID_AMOUNT: &str = "invalid-amount";
}

fn amount_and_account(wallet: &Wallet, amount: i64) -> Result<(), Rejection> {
    if !wallet.open {
        return Err(Rejection::new(reason::NO_SUCH_ACCOUNT, "the account is not open"));
    }
    if amount <= 0 {
        return Err(Rejection::new(reason::INVALID_AMOUNT, format!("amount {amount} is not above 0")));
    }
    Ok(())
}

impl Aggregate for Accounts {
    const NAME: &'static str = "accounts";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type State = Wallet;
    const COMMANDS: Topic<AccountCommand> = ACCOUNT_COMMANDS;
    const EVENTS: Topic<AccountEvent> = ACCOUNTS;

    fn decide(&self, wallet: &Wallet, command: AccountCommand) -> Result<Vec<AccountEvent>, Rejection> {
        match command {
            AccountCommand::Open(_) if wallet.open => Err(Rejection::new(reason::ALREADY_OPEN, format!("already open for {}", wallet.owner))),
            AccountCommand::Open(open) => Ok(vec![AccountEvent::Opened(AccountOpened { account_id: open.account_id, owner: open.owner })]),
            AccountCommand::Deposit(d) => {
                amount_and_account(wallet, d.amount_cents)?;
                if wallet.balance_cents.checked_add(d.amount_cents).is_none() {
                    return Err(Rejection::new(reason::INVALID_AMOUNT, format!("balance {} plus {} is more than an account holds ({} cents)", wallet.balance_cents, d.amount_cents, i64::MAX)));
                }
                Ok(vec![AccountEvent::Deposited(MoneyDeposited { account_id: d.account_id, amount_cents: d.amount_cents })])
            }
            AccountCommand::Withdraw(w) => {
                amount_and_account(wallet, w.amount_cents)?;
                if w.amount_cents > wallet.balance_cents {
                    return Err(Rejection::new(reason::INSUFFICIENT_FUNDS, format!("balance {} is less than {}", wallet.balance_cents, w.amount_cents)));
                }
                Ok(vec![AccountEvent::Withdrawn(MoneyWithdrawn { account_id: w.account_id, amount_cents: w.amount_cents })])
            }
        }
    }

    fn evolve(&self, wallet: Wallet, event: &AccountEvent) -> Wallet {
        match event {
            AccountEvent::Opened(o) => Wallet { open: true, owner: o.owner.clone(), balance_cents: 0 },
            // `decide` keeps the balance within 0..=i64::MAX; saturating, an event from
            // elsewhere cannot make a fold panic.
            AccountEvent::Deposited(d) => Wallet { balance_cents: wallet.balance_cents.saturating_add(d.amount_cents), ..wallet },
            AccountEvent::Withdrawn(w) => Wallet { balance_cents: wallet.balance_cents.saturating_sub(w.amount_cents), ..wallet },
        }
    }
}

#[cfg(test)]
mod tests;
