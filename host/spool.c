/* spool: not written yet */
