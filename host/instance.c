/* instance: not written yet */
