print('v2 from ws1')
