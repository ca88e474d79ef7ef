"""What model calls use and may use: the gateway's metering of every answer (``metering``), read as it
streams past (``reader``) in each wire format (``wire``), priced (``prices``), turned into short
action lines (``actions``) and held to the budgets (``budgets``)."""
