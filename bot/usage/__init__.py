"""What model calls use and may use: the gateway's metering of every answer (``metering``), read in
each wire format (``wire``), priced (``prices``), turned into short action lines (``actions``) and
held to the budgets (``budgets``)."""
