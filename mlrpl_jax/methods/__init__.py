"""Method plug-ins: baseline, SST, HST, SARB, DSRB, SATL."""
