//! The console's words, in one table (Vietnamese first, English beside it), and how it
//! writes money and dates for people: `1.500.000 ₫` and `dd/mm/yyyy`.
//!
//! **Boundary:** pure; no rule is decided here, only how a thing is said.

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// The language a page is written in: Vietnamese unless the reader chose English.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Vi,
    En,
}

impl Lang {
    /// The `lang` attribute and the value of the language cookie.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    /// "vi" or "en"; anything else is None (the default then applies).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "vi" => Some(Lang::Vi),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The other language, for the switch in the page header.
    pub fn other(self) -> Self {
        match self {
            Lang::Vi => Lang::En,
            Lang::En => Lang::Vi,
        }
    }

    pub fn t(self, text: T) -> &'static str {
        let (vi, en) = text.pair();
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }
}

/// Every phrase of the console. A variant without both words does not compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum T {
    Title,
    LanguageName,
    SignIn,
    SignOut,
    StaffToken,
    SignedInAs,
    SessionExpired,
    UnknownToken,
    Forbidden,
    CsrfRefused,
    Home,
    FindHousehold,
    HouseholdId,
    CitizenId,
    Find,
    NotFound,
    RegisterHousehold,
    Area,
    Rural,
    Urban,
    RegisteredOn,
    HeadName,
    HeadCitizenId,
    Phone,
    Member,
    Name,
    Relation,
    Submit,
    Recorded,
    AlreadyRecorded,
    Partition,
    Sequence,
    Hash,
    Household,
    Commune,
    Members,
    Standing,
    Class,
    Status,
    ValidFrom,
    ValidTo,
    Standard,
    NoStanding,
    Loans,
    Loan,
    Programme,
    Approved,
    Disbursed,
    Outstanding,
    InterestToDate,
    Overdue,
    Due,
    Schedule,
    Instalment,
    Cumulative,
    Assistance,
    Month,
    Channel,
    Received,
    Collected,
    Returned,
    Net,
    Instructed,
    Settled,
    FailedPayments,
    TimedOut,
    CancelledPayments,
    PendingPayments,
    Mismatches,
    StreamPosition,
    SigningKey,
    History,
    Event,
    Actor,
    Detail,
    Previous,
    Next,
    Classify,
    IncomePerPerson,
    Deprived,
    ReviewYear,
    DecidedOn,
    Corrects,
    ResultClass,
    ApproveLoan,
    Amount,
    TermMonths,
    SavingsGroup,
    Entrusted,
    On,
    Reason,
    LoanReference,
    Disburse,
    Repay,
    Split,
    ToInterest,
    ToOverdueInterest,
    ToOverduePrincipal,
    ToPrincipal,
    StatusAfter,
    Refused,
    RoleDenied,
    OutsideUnit,
    KeyReused,
    Unavailable,
    Internal,
    Portfolio,
    OpenLoans,
    HouseholdsActive,
    OverdueRatio,
    WrittenOff,
    OutstandingByProgramme,
    Payments,
    Budget,
    Period,
    PaymentRun,
    Reconciliation,
    Day,
    Gateway,
    DownloadCsv,
    Audit,
    ChainStatus,
    Events,
    Head,
    Checkpoints,
    LatestCheckpoint,
    TreeSize,
    Root,
    Cosigners,
    InclusionProof,
    Bundle,
    Download,
    Show,
    BackToHousehold,
    /// Shown after a recorded write whose details could not be read back yet.
    DetailsNotYetReadable,
    Nothing,
    Page,
    Job,
    JobWaiting,
    JobRunning,
    JobDone,
    JobFailed,
    Progress,
    RefreshesItself,
    PartitionRun,
    StartPartitionRun,
    CommunesDone,
    Outcome,
    Shortfalls,
    NotResident,
    Deceased,
    NotAMember,
    HouseholdErased,
    Anomalies,
    FindAnomalies,
    Recompute,
    RecomputeDecisions,
    AsOf,
    PendingDays,
    Findings,
    FindingsNotListed,
    Decisions,
    Kind,
    Where,
    Details,
    Start,
    Instructions,
    GrantEntitlement,
    Entitlement,
    Category,
    FromMonth,
    ChannelBank,
    ChannelMobileMoney,
    ChannelPostOffice,
    OutcomePaid,
    OutcomeNothingLeft,
    OutcomeUnfunded,
    MemberNameMissing,
}

impl T {
    fn pair(self) -> (&'static str, &'static str) {
        use T::*;
        match self {
            Title => ("Sổ an sinh — bàn làm việc", "Ansinh ledger — console"),
            LanguageName => ("Tiếng Việt", "English"),
            SignIn => ("Đăng nhập", "Sign in"),
            SignOut => ("Đăng xuất", "Sign out"),
            StaffToken => ("Mã truy cập của cán bộ", "Staff token"),
            SignedInAs => ("Đang làm việc với tư cách", "Signed in as"),
            SessionExpired => (
                "Phiên làm việc đã hết hạn hoặc không hợp lệ. Vui lòng đăng nhập lại.",
                "Your session expired or is not valid. Please sign in again.",
            ),
            UnknownToken => ("Mã truy cập không đúng.", "That token is not known."),
            Forbidden => ("Không được phép", "Forbidden"),
            CsrfRefused => (
                "Biểu mẫu không mang mã bảo vệ của phiên này nên bị từ chối; không có gì được ghi.",
                "The form did not carry the protection token of your sign-in, so it was refused; nothing was recorded.",
            ),
            Home => ("Trang chính", "Home"),
            FindHousehold => ("Tìm hộ", "Find a household"),
            HouseholdId => ("Mã hộ", "Household id"),
            CitizenId => ("Số định danh cá nhân", "Citizen id"),
            Find => ("Tìm", "Find"),
            NotFound => ("Không tìm thấy.", "Not found."),
            RegisterHousehold => ("Đăng ký hộ", "Register a household"),
            Area => ("Khu vực", "Area"),
            Rural => ("Nông thôn", "Rural"),
            Urban => ("Thành thị", "Urban"),
            RegisteredOn => ("Ngày đăng ký", "Registered on"),
            HeadName => ("Họ tên chủ hộ", "Head of household"),
            HeadCitizenId => ("Số định danh chủ hộ", "Head's citizen id"),
            Phone => ("Số điện thoại", "Phone"),
            Member => ("Thành viên", "Member"),
            Name => ("Họ tên", "Name"),
            Relation => ("Quan hệ với chủ hộ", "Relation to the head"),
            Submit => ("Ghi vào sổ", "Record"),
            Recorded => ("Đã ghi vào sổ.", "Recorded."),
            AlreadyRecorded => (
                "Biểu mẫu này đã được ghi trước đó; không ghi thêm lần nữa.",
                "This form was already recorded; nothing was added again.",
            ),
            Partition => ("Phân vùng", "Partition"),
            Sequence => ("Số thứ tự", "Sequence"),
            Hash => ("Mã băm", "Hash"),
            Household => ("Hộ", "Household"),
            Commune => ("Xã", "Commune"),
            Members => ("Số thành viên", "Members"),
            Standing => ("Xếp loại hộ", "Standing"),
            Class => ("Loại", "Class"),
            Status => ("Trạng thái", "Status"),
            ValidFrom => ("Hiệu lực từ", "Valid from"),
            ValidTo => ("Hiệu lực đến", "Valid to"),
            Standard => ("Chuẩn áp dụng", "Standard applied"),
            NoStanding => ("Chưa được xếp loại.", "Not classified yet."),
            Loans => ("Khoản vay", "Loans"),
            Loan => ("Khoản vay", "Loan"),
            Programme => ("Chương trình", "Programme"),
            Approved => ("Được duyệt", "Approved"),
            Disbursed => ("Đã giải ngân", "Disbursed"),
            Outstanding => ("Dư nợ", "Outstanding"),
            InterestToDate => ("Lãi đến nay", "Interest to date"),
            Overdue => ("Quá hạn", "Overdue"),
            Due => ("Hạn trả", "Due"),
            Schedule => ("Lịch trả nợ gốc", "Principal schedule"),
            Instalment => ("Kỳ trả", "Instalment"),
            Cumulative => ("Lũy kế", "Cumulative"),
            Assistance => (
                "Trợ cấp đã nhận theo tháng",
                "Assistance received per month",
            ),
            Month => ("Tháng", "Month"),
            Channel => ("Kênh", "Channel"),
            Received => ("Đã nhận", "Received"),
            Collected => ("Đã thu nợ", "Collected"),
            Returned => ("Bị trả lại", "Returned"),
            Net => ("Thực nhận", "Net"),
            Instructed => ("Đã lệnh chi", "Instructed"),
            Settled => ("Đã chi trả", "Settled"),
            FailedPayments => ("Không thành công", "Failed"),
            TimedOut => ("Quá hạn không có kết quả", "Timed out"),
            CancelledPayments => ("Đã hủy", "Cancelled"),
            PendingPayments => ("Đang chờ", "Pending"),
            Mismatches => ("Sai lệch", "Mismatches"),
            StreamPosition => ("Vị trí trong luồng", "Stream position"),
            SigningKey => ("Khóa ký", "Signing key"),
            History => ("Lịch sử", "History"),
            Event => ("Sự kiện", "Event"),
            Actor => ("Người thực hiện", "Actor"),
            Detail => ("Nội dung", "Detail"),
            Previous => ("Trang trước", "Previous"),
            Next => ("Trang sau", "Next"),
            Classify => ("Xếp loại hộ", "Classify"),
            IncomePerPerson => (
                "Thu nhập bình quân người/tháng",
                "Income per person per month",
            ),
            Deprived => ("Chỉ số thiếu hụt", "Deprived indicators"),
            ReviewYear => ("Năm rà soát", "Review year"),
            DecidedOn => ("Ngày quyết định", "Decided on"),
            Corrects => (
                "Đính chính quyết định (số thứ tự), nếu ghi nhầm",
                "Corrects decision (sequence), if recorded by mistake",
            ),
            ResultClass => ("Kết quả xếp loại", "Resulting class"),
            ApproveLoan => ("Duyệt cho vay", "Approve a loan"),
            Amount => ("Số tiền", "Amount"),
            TermMonths => ("Thời hạn (tháng)", "Term (months)"),
            SavingsGroup => ("Tổ tiết kiệm và vay vốn", "Savings group"),
            Entrusted => ("Tổ chức nhận ủy thác", "Entrusted organisation"),
            On => ("Ngày", "On"),
            Reason => ("Lý do", "Reason"),
            LoanReference => ("Số khoản vay", "Loan reference"),
            Disburse => ("Giải ngân", "Disburse"),
            Repay => ("Thu nợ", "Repay"),
            Split => ("Phân bổ số tiền trả", "How the payment was split"),
            ToInterest => ("Trả lãi", "To interest"),
            ToOverdueInterest => ("Trả lãi quá hạn", "To overdue interest"),
            ToOverduePrincipal => ("Trả gốc quá hạn", "To overdue principal"),
            ToPrincipal => ("Trả gốc", "To principal"),
            StatusAfter => ("Trạng thái sau đó", "Status after"),
            Refused => ("Sổ từ chối", "The ledger refused"),
            RoleDenied => (
                "Vai trò của bạn không được làm việc này.",
                "Your role may not do this.",
            ),
            OutsideUnit => (
                "Hộ hoặc khoản vay này không thuộc đơn vị của bạn.",
                "This household or loan is outside your unit.",
            ),
            KeyReused => (
                "Biểu mẫu này đã được gửi với nội dung khác. Hãy mở lại biểu mẫu mới.",
                "This form was already sent with other values. Open a fresh form.",
            ),
            Internal => (
                "Lỗi nội bộ của hệ thống; chi tiết đã ghi vào nhật ký máy chủ. Hãy báo cho bộ phận vận hành.",
                "An internal error; the detail is in the server's log. Tell the operators.",
            ),
            Unavailable => (
                "Sổ tạm thời không trả lời; gửi lại cùng biểu mẫu sẽ không ghi hai lần.",
                "The ledger is not answering now; sending the same form again will not record it twice.",
            ),
            Portfolio => ("Danh mục cho vay của xã", "Commune portfolio"),
            OpenLoans => ("Khoản vay đang mở", "Open loans"),
            HouseholdsActive => ("Hộ đang hoạt động", "Active households"),
            OverdueRatio => ("Tỷ lệ nợ quá hạn", "Overdue ratio"),
            WrittenOff => ("Đã xóa nợ", "Written off"),
            OutstandingByProgramme => ("Dư nợ theo chương trình", "Outstanding by programme"),
            Payments => ("Chi trả trợ cấp", "Payments"),
            Budget => ("Ngân sách tháng", "Monthly budget"),
            Period => ("Tháng (yyyy-mm)", "Month (yyyy-mm)"),
            PaymentRun => ("Đợt chi trả", "Payment run"),
            Reconciliation => ("Đối soát", "Reconciliation"),
            Day => ("Ngày", "Day"),
            Gateway => ("Cổng thanh toán", "Gateway"),
            DownloadCsv => ("Tải CSV", "Download CSV"),
            Audit => ("Kiểm toán", "Audit"),
            ChainStatus => ("Chuỗi và điểm kiểm tra", "Chain and checkpoints"),
            Events => ("Số sự kiện", "Events"),
            Head => ("Đầu chuỗi", "Head"),
            Checkpoints => ("Điểm kiểm tra", "Checkpoints"),
            LatestCheckpoint => ("Điểm kiểm tra mới nhất", "Latest checkpoint"),
            TreeSize => ("Kích thước cây", "Tree size"),
            Root => ("Gốc", "Root"),
            Cosigners => ("Đồng ký", "Cosigners"),
            InclusionProof => ("Chứng minh có mặt", "Inclusion proof"),
            Bundle => ("Hồ sơ kiểm toán của hộ", "Household audit bundle"),
            Download => ("Tải về", "Download"),
            Show => ("Xem", "Show"),
            BackToHousehold => ("Về trang của hộ", "Back to the household"),
            DetailsNotYetReadable => (
                "Đã ghi vào sổ. Chi tiết chưa đọc lại được; chúng sẽ hiện trên trang của hộ trong giây lát. Đừng gửi lại bằng một biểu mẫu mới.",
                "Recorded in the ledger. Its details could not be read back yet; they will show on the household page in a moment. Do not send it again from a new form.",
            ),
            Nothing => ("Không có gì.", "Nothing."),
            Page => ("Trang", "Page"),
            Job => ("Công việc", "Job"),
            JobWaiting => ("Đang chờ lượt đọc sổ", "Waiting for a reader of the log"),
            JobRunning => ("Đang chạy", "Running"),
            JobDone => ("Đã xong", "Done"),
            JobFailed => ("Thất bại", "Failed"),
            Progress => ("Tiến độ", "Progress"),
            RefreshesItself => (
                "Trang tự cập nhật mỗi 2 giây cho đến khi xong.",
                "This page refreshes itself every 2 seconds until the job ends.",
            ),
            PartitionRun => ("Chi trả cả tỉnh", "Pay the whole province"),
            StartPartitionRun => (
                "Chi trả mọi xã của tỉnh",
                "Pay every commune of the province",
            ),
            CommunesDone => ("Số xã đã xong", "Communes done"),
            Outcome => ("Kết quả", "Outcome"),
            Shortfalls => ("Thiếu ngân sách", "Budget shortfalls"),
            NotResident => (
                "Không chi trả vì hộ không còn cư trú tại đây (cần dừng trợ cấp)",
                "Not paid: the household no longer lives here (stop these entitlements)",
            ),
            Deceased => (
                "Không chi trả vì người hưởng đã mất trước tháng này (cần dừng trợ cấp)",
                "Not paid: the beneficiary died before this month (stop these entitlements)",
            ),
            NotAMember => (
                "Không chi trả vì người hưởng không còn là thành viên của hộ (cần dừng trợ cấp)",
                "Not paid: the beneficiary is no longer a member of the household (stop these entitlements)",
            ),
            HouseholdErased => (
                "Không chi trả vì dữ liệu cá nhân của hộ đã bị xóa (cần dừng trợ cấp)",
                "Not paid: the household's personal data were erased (stop these entitlements)",
            ),
            Anomalies => ("Bất thường", "Anomalies"),
            FindAnomalies => ("Tìm bất thường", "Find anomalies"),
            Recompute => (
                "Tính lại quyết định xét duyệt",
                "Recomputed eligibility decisions",
            ),
            RecomputeDecisions => (
                "Tính lại các quyết định xét duyệt",
                "Recompute eligibility decisions",
            ),
            AsOf => ("Tính đến ngày", "As of"),
            PendingDays => ("Số ngày chờ kết quả tối đa", "Days an instruction may wait"),
            Findings => ("Phát hiện", "Findings"),
            FindingsNotListed => (
                "Chỉ liệt kê 1.000 phát hiện đầu; xem hết bằng ansinh audit anomalies --json.",
                "Only the first 1,000 findings are listed; ansinh audit anomalies --json lists all.",
            ),
            Decisions => ("Số quyết định đã tính lại", "Decisions recomputed"),
            Kind => ("Loại", "Kind"),
            Where => ("Vị trí trong sổ", "Where in the log"),
            Details => ("Chi tiết", "Details"),
            Start => ("Bắt đầu", "Start"),
            Instructions => ("Số lệnh chi", "Instructions"),
            GrantEntitlement => ("Cấp trợ cấp hằng tháng", "Grant a monthly allowance"),
            Entitlement => ("Số hưởng trợ cấp", "Entitlement"),
            Category => ("Đối tượng hưởng", "Beneficiary category"),
            FromMonth => ("Hưởng từ tháng (yyyy-mm)", "From month (yyyy-mm)"),
            ChannelBank => ("Tài khoản ngân hàng", "Bank account"),
            ChannelMobileMoney => ("Ví điện tử / Mobile Money", "Mobile money"),
            ChannelPostOffice => ("Bưu điện", "Post office"),
            OutcomePaid => ("đã lập lệnh chi", "paid"),
            OutcomeNothingLeft => ("đã chi trước đó", "paid before"),
            OutcomeUnfunded => ("thiếu ngân sách", "no budget covered it"),
            MemberNameMissing => (
                "Chưa nhập họ tên thành viên",
                "The member's name is missing",
            ),
        }
    }
}

/// Each list of a run's entitlements left unpaid that names any, in `lang`: (the field's
/// name, with `-` for `_`, for an element id; why they were left; the ids, joined).
pub fn left_unpaid(
    lang: Lang,
    left: &crate::domain::payments::instructions::LeftUnpaid,
) -> Vec<(String, &'static str, String)> {
    left.by_reason()
        .into_iter()
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(reason, ids)| {
            let why = match reason {
                "not_resident" => T::NotResident,
                "deceased" => T::Deceased,
                "erased" => T::HouseholdErased,
                _ => T::NotAMember,
            };
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            (reason.replace('_', "-"), lang.t(why), ids.join(", "))
        })
        .collect()
}

/// Money as Vietnamese readers write it (`1.500.000 ₫`): the ledger's own formatter.
pub fn money(amount: Decimal) -> String {
    crate::domain::money::format_vnd(amount)
}

/// Money from a decimal string of the projections; shown as given if it is not one.
pub fn money_str(amount: &str) -> String {
    amount
        .parse::<Decimal>()
        .map(money)
        .unwrap_or_else(|_| amount.to_owned())
}

/// A date as `dd/mm/yyyy`.
pub fn date(d: NaiveDate) -> String {
    d.format("%d/%m/%Y").to_string()
}

/// An ISO date string of the projections as `dd/mm/yyyy`; empty or unreadable text is
/// shown as given.
pub fn date_str(iso: &str) -> String {
    iso.parse::<NaiveDate>()
        .map(date)
        .unwrap_or_else(|_| iso.to_owned())
}

/// A date typed by a person: `dd/mm/yyyy` (as it is shown) or `yyyy-mm-dd`, then read by
/// the ledger's one date parser, so both spellings name one date.
pub fn parse_date(typed: &str) -> Result<NaiveDate, crate::input::InputError> {
    let typed = typed.trim();
    let parts: Vec<&str> = typed.split('/').collect();
    if let [d, m, y] = parts.as_slice() {
        if d.len() == 2 && m.len() == 2 && y.len() == 4 {
            return crate::input::date(&format!("{y}-{m}-{d}"));
        }
    }
    crate::input::date(typed)
}

/// An amount to move typed by a person: `1.500.000`, `1500000` or `1.500.000 ₫` (dots
/// group thousands; amounts are whole đồng), then read by the ledger's money parser,
/// which refuses 0.
pub fn parse_money(typed: &str) -> Result<Decimal, crate::input::InputError> {
    crate::input::money(&plain_money(typed)?)
}

/// An amount that may be 0, typed as `parse_money` reads it: a household's income,
/// which the API takes as `money_non_negative` (a household may have none).
pub fn parse_money_or_zero(typed: &str) -> Result<Decimal, crate::input::InputError> {
    crate::input::money_or_zero(&plain_money(typed)?)
}

/// The digits of a typed amount, without the đồng sign and the dots (or spaces) that
/// group its thousands. Separators anywhere else are refused, not dropped: `1.5` (one
/// and a half, in English) is not 15 đồng, nor `1.50.000` 150.000.
fn plain_money(typed: &str) -> Result<String, crate::input::InputError> {
    let amount = typed.trim().trim_end_matches('₫').trim_end();
    let groups: Vec<&str> = amount
        .split(|c: char| c == '.' || c.is_whitespace())
        .collect();
    let in_thousands = match groups.split_first() {
        Some((_, [])) | None => true,
        Some((first, rest)) => {
            (1..=3).contains(&first.len()) && rest.iter().all(|group| group.len() == 3)
        }
    };
    if !in_thousands {
        return Err(crate::input::InputError {
            kind: crate::input::Kind::Money,
            reason: "its dots or spaces do not group its digits in thousands (1.500.000)".into(),
        });
    }
    Ok(groups.concat())
}

/// A Unix time in milliseconds as `dd/mm/yyyy hh:mm` in Vietnam (UTC+7), as every other
/// date the ledger shows: in UTC an event recorded before 07:00 would show yesterday.
pub fn timestamp(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|t| {
            t.with_timezone(&crate::clock::vietnam())
                .format("%d/%m/%Y %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn times_are_shown_in_vietnam() {
        // 2026-12-06 23:30 UTC is 06:30 on the 7th in Vietnam.
        let ms = chrono::NaiveDate::from_ymd_opt(2026, 12, 6)
            .unwrap()
            .and_hms_opt(23, 30, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(timestamp(ms), "07/12/2026 06:30");
    }

    #[test]
    fn money_is_written_with_dots_and_the_dong_sign() {
        assert_eq!(money(dec!(1500000)), "1.500.000 ₫");
        assert_eq!(money(dec!(0)), "0 ₫");
        assert_eq!(money_str("30000000"), "30.000.000 ₫");
        assert_eq!(money_str("not money"), "not money");
    }

    #[test]
    fn typed_money_reads_with_or_without_dots() {
        assert_eq!(parse_money("1.500.000").unwrap(), dec!(1500000));
        assert_eq!(parse_money("1500000").unwrap(), dec!(1500000));
        assert_eq!(parse_money(" 1.500.000 ₫ ").unwrap(), dec!(1500000));
        assert!(parse_money("một triệu").is_err());
        assert!(parse_money("-5").is_err());
        assert!(parse_money("0").is_err());
        assert_eq!(parse_money_or_zero("0").unwrap(), dec!(0));
        assert_eq!(parse_money_or_zero("0 ₫").unwrap(), dec!(0));
        assert_eq!(parse_money_or_zero("1.200.000").unwrap(), dec!(1200000));
        assert!(parse_money_or_zero("-5").is_err());
        assert!(parse_money_or_zero("").is_err());
        assert_eq!(parse_money("1 500 000").unwrap(), dec!(1500000));
        assert_eq!(parse_money("15.000").unwrap(), dec!(15000));
        assert_eq!(parse_money("150.000 ₫").unwrap(), dec!(150000));
        // A separator that does not group thousands is not dropped: the amount is refused.
        for typed in [
            "1.5", "1.50.000", "1500.000", ".500", "1..500", "1.500.", "1 5", "1.5000",
        ] {
            let e = parse_money(typed).unwrap_err();
            assert_eq!(e.kind, crate::input::Kind::Money, "{typed:?}");
            assert!(e.to_string().contains("thousands"), "{typed:?}: {e}");
        }
    }

    #[test]
    fn dates_are_day_month_year() {
        let d = NaiveDate::from_ymd_opt(2026, 2, 3).unwrap();
        assert_eq!(date(d), "03/02/2026");
        assert_eq!(date_str("2026-02-03"), "03/02/2026");
        assert_eq!(date_str(""), "");
        assert_eq!(parse_date("03/02/2026").unwrap(), d);
        assert_eq!(parse_date("2026-02-03").unwrap(), d);
        assert!(parse_date("3/2/2026").is_err());
        assert!(parse_date("31/02/2026").is_err());
    }

    #[test]
    fn every_phrase_has_both_languages() {
        // Diacritics come through as written.
        assert_eq!(Lang::Vi.t(T::SignIn), "Đăng nhập");
        assert_eq!(Lang::En.t(T::SignIn), "Sign in");
        assert_eq!(Lang::parse("en"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(Lang::default(), Lang::Vi);
    }
}
