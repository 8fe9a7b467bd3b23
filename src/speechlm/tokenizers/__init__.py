"""Speech tokenizers (codecs): one interface, in-house coupled / semi-decoupled / decoupled designs, adapters."""
